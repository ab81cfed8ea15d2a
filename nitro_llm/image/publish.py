"""From a built image to what is published and checked: the EIF and its PCRs in the manifest, the
check an instance runs on the EIF it downloaded, and the ``docker import`` line for nitro-cli users.

- ``add_eif``: assemble the EIF from nitro-cli's blobs and the build's application ramdisk, and
  record the blobs (inputs) and the EIF with PCR0/1/2(/8) (outputs) in the manifest. Same blobs and
  same ramdisk give the same EIF bytes and PCRs on any machine (a signed EIF: the same PCRs).
- ``verify_eif``: what an instance runs before ``nitro-cli run-enclave``: it measures the EIF
  exactly as ``describe-eif`` does and compares every PCR the manifest pins, the application
  ramdisk's digest and size, the CRC and, when signed, the signature. Each check is reported, so a
  failure names what differs. The PCRs are what KMS checks; the ramdisk digest says whether a PCR2
  difference is in the ramdisk; the CRC catches a damaged download.
- ``docker_import_argv``: the ``docker import`` of ``rootfs.tar`` with the image's command and
  environment as ``--change`` instructions, so that ``nitro-cli build-enclave --docker-uri`` writes
  the same ``cmd`` and ``env`` files and holds the same root filesystem. nitro-cli's linuxkit packs
  that filesystem into a ramdisk of its own making (its own entry order and timestamps, plus
  ``/etc/mtab``, ``/dev/pts``, ``/dev/shm`` and its own ``/etc/hosts`` and ``/etc/resolv.conf``:
  linuxkit ``moby/build/image.go``; ``cmd``/``env`` last: ``enclave_build/src/yaml_generator.rs``),
  so the PCR2 it prints is not the manifest's: on that path the key policy pins nitro-cli's output.

Nothing here imports the build itself, so an instance can verify with the product's own
dependencies.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from cryptography.hazmat.primitives.serialization import Encoding

from nitro_llm.image.digest import file_sha256
from nitro_llm.image.eif import Blobs, build_eif, read_eif
from nitro_llm.image.eif_format import EifFormatError, EifSignatureError, SectionType
from nitro_llm.image.eif_sign import load_certificate
from nitro_llm.image.errors import ImageError, InputMismatchError
from nitro_llm.image.manifest import (
    MANIFEST_FILE,
    BlobFile,
    BlobsInput,
    EifOutput,
    Manifest,
    PublishedManifest,
)
from nitro_llm.image.progress import Progress
from nitro_llm.image.ramdisk import env_items, lines_file

EIF = "nitro-llm.eif"
DEFAULT_BLOBS = Path("/usr/share/nitro_enclaves/blobs")
DEFAULT_DOCKER_TAG = "nitro-llm-enclave:latest"
_CHUNK = 1 << 20


# -- building ----------------------------------------------------------------------------------------


def _blob_file(path: Path) -> BlobFile:
    return BlobFile(file=path.name, size=path.stat().st_size, sha256=file_sha256(path))


def blobs_input(blobs_dir: Path, arch: str = "x86_64") -> BlobsInput:
    blobs = Blobs.load(blobs_dir, arch)
    return BlobsInput(
        arch=arch,
        kernel=_blob_file(blobs.kernel),
        kernel_config=_blob_file(blobs.kernel_config) if blobs.kernel_config is not None else None,
        cmdline=blobs.cmdline.decode("utf-8"),
        init=_blob_file(Path(blobs_dir) / "init"),
        nsm_ko=_blob_file(Path(blobs_dir) / "nsm.ko"),
    )


def add_eif(
    out_dir: Path,
    manifest: Manifest,
    blobs_dir: Path,
    *,
    arch: str = "x86_64",
    signing_cert: Path | None = None,
    signing_key: Path | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Write ``out_dir/nitro-llm.eif`` from the build's ramdisk and rewrite the manifest with it."""
    progress = progress or Progress()
    out_dir = Path(out_dir)
    ramdisk = out_dir / manifest.ramdisk.file
    if file_sha256(ramdisk) != manifest.ramdisk.sha256:
        raise InputMismatchError(
            f"application ramdisk {ramdisk.name}",
            f"{ramdisk} is not the ramdisk the manifest lists (sha256 {manifest.ramdisk.sha256})",
            hint="build the image again; nothing may change the build directory in between",
        )
    blobs = blobs_input(blobs_dir, arch)
    progress.step(f"assembling the EIF from the blobs in {blobs_dir} (kernel {blobs.kernel.sha256[:16]}...)")
    target = out_dir / EIF
    measurements = build_eif(
        blobs_dir,
        [ramdisk],
        target,
        signing_cert=signing_cert,
        signing_key=signing_key,
        arch=arch,
    )
    if measurements.pcr2 != manifest.pcr2:  # the same bytes, measured twice: a bug if they differ
        raise ImageError(f"the EIF's PCR2 {measurements.pcr2} is not the ramdisk's {manifest.pcr2}")
    certificate_sha256 = None
    if signing_cert is not None:
        certificate = load_certificate(Path(signing_cert).read_bytes())
        certificate_sha256 = hashlib.sha256(certificate.public_bytes(Encoding.DER)).hexdigest()
    eif = EifOutput(
        file=EIF,
        size=target.stat().st_size,
        sha256=None if measurements.pcr8 is not None else file_sha256(target),
        pcr0=measurements.pcr0,
        pcr1=measurements.pcr1,
        pcr2=measurements.pcr2,
        pcr8=measurements.pcr8,
        signing_certificate_sha256=certificate_sha256,
    )
    updated = replace(manifest, blobs=blobs, eif=eif)
    updated.write(out_dir / MANIFEST_FILE)
    return updated


# -- verifying ---------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Check:
    """One comparison of the EIF with the manifest."""

    name: str
    expected: str
    found: str

    @property
    def ok(self) -> bool:
        return self.expected == self.found


@dataclass(frozen=True)
class Verification:
    eif: Path
    checks: tuple[Check, ...]
    notes: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)

    def failed(self) -> list[Check]:
        return [check for check in self.checks if not check.ok]


def verify_eif(eif_path: Path, manifest: PublishedManifest) -> Verification:
    """Compare an EIF with a published manifest. Raises when the file is not an EIF at all or the
    manifest pins no PCR0/PCR1 (built without blobs); otherwise reports every check."""
    if manifest.eif is None:
        raise ImageError(
            f"{manifest.path} pins no PCR0/PCR1: its image was built without nitro-cli's blobs",
            hint="publish the manifest of 'nitro-llm image build --blobs DIR', which adds the EIF's PCRs",
        )
    eif = read_eif(eif_path, verify_crc=False)
    found = eif.measurements.pcrs()
    checks = [
        Check(f"PCR{index}", expected, found.get(index, "absent (the EIF is unsigned)"))
        for index, expected in sorted(manifest.pcrs().items())
    ]
    if 8 in found and 8 not in manifest.pcrs():
        checks.append(Check("PCR8", "absent (the manifest's EIF is unsigned)", found[8]))
    ramdisks = [s for s in eif.sections if s.type is SectionType.RAMDISK][1:]
    checks.append(Check("application ramdisks", "1", str(len(ramdisks))))
    if len(ramdisks) == 1:
        section = ramdisks[0]
        digest = _section_sha256(Path(eif_path), section.data_offset, section.size)
        checks.append(Check("application ramdisk sha256", manifest.ramdisk.sha256, digest))
        checks.append(Check("application ramdisk size", str(manifest.ramdisk.size), str(section.size)))
    checks.append(Check("CRC32", f"{eif.computed_crc32:08x}", f"{eif.header.crc32:08x}"))
    if eif.is_signed:
        try:
            valid = "verifies" if eif.signature_valid() else "signs another PCR0"
        except EifSignatureError as exc:
            valid = f"does not verify ({exc.message})"
        checks.append(Check("signature", "verifies", valid))
    notes = []
    if manifest.eif.sha256 is not None:
        actual = file_sha256(Path(eif_path))
        if actual != manifest.eif.sha256:
            notes.append(
                f"the file's sha256 {actual[:16]}... is not the published {manifest.eif.sha256[:16]}... "
                "(bytes outside the measured sections differ, such as the metadata section)"
            )
    return Verification(Path(eif_path), tuple(checks), tuple(notes))


def _section_sha256(path: Path, offset: int, size: int) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        file.seek(offset)
        remaining = size
        while remaining:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise EifFormatError(f"{path.name} ends inside its application ramdisk")
            digest.update(chunk)
            remaining -= len(chunk)
    return digest.hexdigest()


# -- nitro-cli's path: docker import ------------------------------------------------------------------

_PLAIN_ENV = re.compile(r"[A-Za-z0-9_./:,+@%=-]*")


def _env_value(value: str) -> str:
    """An ENV value as the Dockerfile parser reads it back unchanged (no ``$`` expansion)."""
    if _PLAIN_ENV.fullmatch(value):
        return value
    return '"' + re.sub(r'(["\\$])', r"\\\1", value) + '"'


def docker_changes(cmd: Sequence[str], env: Mapping[str, str]) -> list[str]:
    """``--change`` instructions giving an imported image this CMD and ENV, in the order nitro-cli
    writes them into the ramdisk's ``cmd`` and ``env`` files (ENV sorted, as our ``env`` file is)."""
    lines_file(cmd, "cmd")  # the same refusals as the ramdisk writer: no newline, no NUL
    items = env_items(env)
    lines_file(items, "env")
    changes = [f"CMD {json.dumps(list(cmd))}"]
    for item in items:
        name, _, value = item.partition("=")
        changes.append(f"ENV {name}={_env_value(value)}")
    return changes


def docker_import_argv(
    manifest: PublishedManifest, rootfs_tar: Path, tag: str = DEFAULT_DOCKER_TAG
) -> list[str]:
    argv = ["docker", "import"]
    for change in docker_changes(manifest.cmd, manifest.env):
        argv += ["--change", change]
    return [*argv, str(rootfs_tar), tag]


def check_rootfs_tar(manifest: PublishedManifest, rootfs_tar: Path) -> None:
    """The tarball is the one the manifest lists (before handing it to docker)."""
    if not rootfs_tar.is_file():
        raise InputMismatchError(
            f"root filesystem {rootfs_tar.name}",
            f"no file at {rootfs_tar}",
            hint="run 'nitro-llm image build OUT' first; it writes OUT/rootfs.tar next to OUT/manifest.json",
        )
    digest = file_sha256(rootfs_tar)
    if digest != manifest.rootfs_tar.sha256:
        raise InputMismatchError(
            f"root filesystem {rootfs_tar.name}",
            f"{rootfs_tar} has sha256 {digest}, the manifest lists {manifest.rootfs_tar.sha256}",
            hint="use the rootfs.tar of the same build as the manifest",
        )
