"""The build manifest: every input with its version and digest, and the outputs with theirs.

Published next to the EIF, it is what a third party needs to rebuild the image and compare, what
the key policy is generated from (``nitro-llm kms-policy --manifest``) and what an instance checks
the EIF it downloaded against (``nitro-llm image verify``). PCR2 comes from the application ramdisk
alone; PCR0/1 only exist once the ramdisk is put into an EIF with nitro-cli's blobs (kernel,
cmdline, init, nsm.ko), so a build given the blobs adds them as ``inputs.blobs`` and the EIF with
its measurements as ``outputs.eif`` (in nitro-cli's ``Measurements`` shape). It names output files
relative to the build directory and holds no time or host detail, so two builds of the same inputs
write the same manifest, byte for byte -- except a signed EIF's file digest, which is left out:
ECDSA signatures are randomised, so each signing gives other bytes (the PCRs do not change).

This module is read on instances that verify a downloaded EIF, where the build's own dependencies
are not installed: it imports nothing of the build (the input types are for annotations only).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from nitro_llm.image.errors import ManifestError

if TYPE_CHECKING:
    from nitro_llm.image.app_files import ModelInput
    from nitro_llm.image.lock import DebPackage
    from nitro_llm.image.python_deps import WheelInput

MANIFEST_FORMAT = 1
MANIFEST_FILE = "manifest.json"
HASH_ALGORITHM = "Sha384 { ... }"  # nitro-cli's Measurements.HashAlgorithm (eif.HASH_ALGORITHM)


@dataclass(frozen=True)
class OutputFile:
    file: str  # relative to the build directory
    size: int
    sha256: str


@dataclass(frozen=True)
class LlamaWheel:
    """The locally built llama-cpp-python: its source is pinned, its wheel only recorded."""

    version: str
    sdist_sha256: str
    cmake_args: str
    wheel: str
    wheel_sha256: str


@dataclass(frozen=True)
class CodeFile:
    path: str  # in the image
    sha256: str


@dataclass(frozen=True)
class BlobFile:
    """One of nitro-cli's blobs, by name in the blobs directory."""

    file: str
    size: int
    sha256: str


@dataclass(frozen=True)
class BlobsInput:
    """The blobs the EIF was assembled from (``/usr/share/nitro_enclaves/blobs`` of a nitro-cli
    release): they make PCR0 and PCR1, so a rebuild must use the same ones."""

    arch: str
    kernel: BlobFile
    kernel_config: BlobFile | None
    cmdline: str  # the text, trimmed, exactly as it goes into the EIF
    init: BlobFile
    nsm_ko: BlobFile


@dataclass(frozen=True)
class EifOutput:
    file: str  # relative to the build directory
    size: int
    sha256: str | None  # None when signed: each signature gives other bytes, the same PCRs
    pcr0: str
    pcr1: str
    pcr2: str
    pcr8: str | None = None  # signed EIFs only: the signing certificate's measurement
    signing_certificate_sha256: str | None = None

    def measurements(self) -> dict[str, str]:
        """nitro-cli's ``Measurements`` object (sorted keys, PCR8 only when signed)."""
        result = {"HashAlgorithm": HASH_ALGORITHM, "PCR0": self.pcr0, "PCR1": self.pcr1, "PCR2": self.pcr2}
        if self.pcr8 is not None:
            result["PCR8"] = self.pcr8
        return result

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"file": self.file, "size": self.size}
        if self.sha256 is not None:
            data["sha256"] = self.sha256
        data["signed"] = self.pcr8 is not None
        if self.signing_certificate_sha256 is not None:
            data["signing_certificate_sha256"] = self.signing_certificate_sha256
        data["measurements"] = self.measurements()
        return data


@dataclass(frozen=True)
class Manifest:
    entry: str
    cmd: tuple[str, ...]
    env: dict[str, str]
    source_date_epoch: int
    debian_lock_sha256: str
    debian: tuple[DebPackage, ...]
    python_lock_sha256: str
    wheels: tuple[WheelInput, ...]
    llama_cpp_python: LlamaWheel
    model: ModelInput
    model_path: str
    config: dict[str, Any]
    config_path: str
    config_sha256: str
    code: tuple[CodeFile, ...]
    rootfs_dir: str
    rootfs_tar: OutputFile
    ramdisk: OutputFile
    pcr2: str
    blobs: BlobsInput | None = None  # set with ``eif`` when the build had nitro-cli's blobs
    eif: EifOutput | None = None

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        result: dict[str, Any] = {
            "format": MANIFEST_FORMAT,
            "entrypoint": {"entry": data["entry"], "cmd": data["cmd"], "env": data["env"]},
            "source_date_epoch": data["source_date_epoch"],
            "inputs": {
                "debian": {"lock_sha256": data["debian_lock_sha256"], "packages": data["debian"]},
                "python": {"lock_sha256": data["python_lock_sha256"], "wheels": data["wheels"]},
                "llama_cpp_python": data["llama_cpp_python"],
                "model": {**data["model"], "path": data["model_path"]},
                "config": {
                    "path": data["config_path"],
                    "sha256": data["config_sha256"],
                    "measured": data["config"],
                },
                "code": data["code"],
            },
            "outputs": {
                "rootfs_dir": data["rootfs_dir"],
                "rootfs_tar": data["rootfs_tar"],
                "ramdisk": data["ramdisk"],
                "pcr2": data["pcr2"],
            },
        }
        if self.blobs is not None:
            result["inputs"]["blobs"] = data["blobs"]
        if self.eif is not None:
            result["outputs"]["eif"] = self.eif.to_dict()
        return result

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(
            "utf-8"
        )

    def write(self, path: Path) -> None:
        path.write_bytes(self.to_json())


# -- reading a published manifest ------------------------------------------------------------------

_PCR_HEX = 96
_SHA256_HEX = 64


@dataclass(frozen=True)
class PublishedManifest:
    """The parts of a published ``manifest.json`` that a key policy and a verifier pin."""

    path: Path
    cmd: tuple[str, ...]
    env: dict[str, str]
    rootfs_tar: OutputFile
    ramdisk: OutputFile
    pcr2: str
    eif: EifOutput | None
    fleet_kms_key: str | None = None
    """The fleet KMS key the enclave was measured with (``image build --fleet-kms-key``), None for an
    enclave with its own session keys: what a fleet instance's config must name (deploy/eif_check.py)."""

    def pcrs(self) -> dict[int, str]:
        """PCR index -> hex: 0, 1, 2 (and 8 when signed) with an EIF, else only PCR2."""
        if self.eif is None:
            return {2: self.pcr2}
        result = {0: self.eif.pcr0, 1: self.eif.pcr1, 2: self.eif.pcr2}
        if self.eif.pcr8 is not None:
            result[8] = self.eif.pcr8
        return result


def read_manifest(path: Path) -> PublishedManifest:
    """Read and check a manifest written by ``nitro-llm image build``; every problem names the field."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(
            f"cannot read the image manifest {path} ({exc.strerror})",
            hint="use the manifest.json published with the EIF ('nitro-llm image build' writes it)",
        ) from None
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise ManifestError(f"{path} is not a JSON image manifest") from None
    reader = _Reader(path)
    root = reader.obj(data, "manifest")
    if root.get("format") != MANIFEST_FORMAT:
        raise ManifestError(
            f"{path}: format {root.get('format')!r} is not the manifest format {MANIFEST_FORMAT} this "
            "version reads",
            hint="use the nitro-llm release that built the image",
        )
    entry = reader.obj(root.get("entrypoint"), "entrypoint")
    cmd = reader.list_of_str(entry.get("cmd"), "entrypoint.cmd")
    env_data = reader.obj(entry.get("env"), "entrypoint.env")
    env = {str(k): reader.text(v, f"entrypoint.env.{k}") for k, v in env_data.items()}
    outputs = reader.obj(root.get("outputs"), "outputs")
    pcr2 = reader.hex(outputs.get("pcr2"), "outputs.pcr2", _PCR_HEX)
    eif = reader.eif(outputs["eif"], "outputs.eif") if outputs.get("eif") is not None else None
    if eif is not None and eif.pcr2 != pcr2:
        raise ManifestError(
            f"{path}: outputs.eif PCR2 {eif.pcr2[:16]}... differs from outputs.pcr2 {pcr2[:16]}...: "
            "the EIF was not built from this ramdisk"
        )
    fleet_kms_key = _measured_config(root, reader).get("fleet_kms_key")
    if fleet_kms_key is not None and not isinstance(fleet_kms_key, str):
        raise reader.fail("inputs.config.measured.fleet_kms_key", "is not a string")
    return PublishedManifest(
        path=path,
        cmd=tuple(cmd),
        env=env,
        rootfs_tar=reader.output(outputs.get("rootfs_tar"), "outputs.rootfs_tar"),
        ramdisk=reader.output(outputs.get("ramdisk"), "outputs.ramdisk"),
        pcr2=pcr2,
        eif=eif,
        fleet_kms_key=fleet_kms_key,
    )


def _measured_config(root: dict[str, Any], reader: _Reader) -> dict[str, Any]:
    """``inputs.config.measured``, the enclave settings the image was built with (absent: none known)."""
    inputs = root.get("inputs")
    config = inputs.get("config") if isinstance(inputs, dict) else None
    if config is None or not isinstance(config, dict) or config.get("measured") is None:
        return {}
    return reader.obj(config["measured"], "inputs.config.measured")


class _Reader:
    def __init__(self, path: Path) -> None:
        self.path = path

    def fail(self, where: str, what: str) -> ManifestError:
        return ManifestError(f"{self.path}: {where} {what}", hint="use the manifest.json the build wrote")

    def obj(self, value: object, where: str) -> dict[str, Any]:
        if not isinstance(value, dict):
            raise self.fail(where, "is missing or not an object")
        return value

    def text(self, value: object, where: str) -> str:
        if not isinstance(value, str):
            raise self.fail(where, "is missing or not a string")
        return value

    def list_of_str(self, value: object, where: str) -> list[str]:
        if not isinstance(value, list) or not value or not all(isinstance(v, str) for v in value):
            raise self.fail(where, "is not a non-empty list of strings")
        return value

    def integer(self, value: object, where: str) -> int:
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise self.fail(where, "is not a size in bytes")
        return value

    def hex(self, value: object, where: str, length: int) -> str:
        text = self.text(value, where)
        if len(text) != length or any(c not in "0123456789abcdef" for c in text):
            raise self.fail(where, f"is not {length} lowercase hex digits")
        return text

    def output(self, value: object, where: str) -> OutputFile:
        data = self.obj(value, where)
        return OutputFile(
            file=self.text(data.get("file"), f"{where}.file"),
            size=self.integer(data.get("size"), f"{where}.size"),
            sha256=self.hex(data.get("sha256"), f"{where}.sha256", _SHA256_HEX),
        )

    def eif(self, value: object, where: str) -> EifOutput:
        data = self.obj(value, where)
        measurements = self.obj(data.get("measurements"), f"{where}.measurements")
        if measurements.get("HashAlgorithm") != HASH_ALGORITHM:
            raise self.fail(f"{where}.measurements.HashAlgorithm", f"is not {HASH_ALGORITHM!r}")
        signed = data.get("signed")
        if not isinstance(signed, bool):
            raise self.fail(f"{where}.signed", "is missing or not true/false")
        if signed != ("PCR8" in measurements):
            raise self.fail(
                f"{where}.measurements", "has PCR8 exactly when the EIF is signed; this one does not"
            )

        def pcr(index: int) -> str:
            return self.hex(measurements.get(f"PCR{index}"), f"{where}.measurements.PCR{index}", _PCR_HEX)

        sha = data.get("sha256")
        cert = data.get("signing_certificate_sha256")
        return EifOutput(
            file=self.text(data.get("file"), f"{where}.file"),
            size=self.integer(data.get("size"), f"{where}.size"),
            sha256=None if sha is None else self.hex(sha, f"{where}.sha256", _SHA256_HEX),
            pcr0=pcr(0),
            pcr1=pcr(1),
            pcr2=pcr(2),
            pcr8=pcr(8) if signed else None,
            signing_certificate_sha256=(
                None if cert is None else self.hex(cert, f"{where}.signing_certificate_sha256", _SHA256_HEX)
            ),
        )
