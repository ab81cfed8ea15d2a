"""Build, read, measure and describe EIF files exactly as nitro-cli does, without nitro-cli or Docker.

The PCRs of the EIF go into the KMS key policy before the enclave ever runs, so they must be the
numbers the Nitro hypervisor will measure, computed here from the same definition nitro-cli uses
(aws-nitro-enclaves-image-format ``src/utils/mod.rs`` ``get_pcrs`` / ``EifBuilder::measure``, and
``src/utils/eif_reader.rs`` ``EifReader::from_eif``, which ``describe-eif`` runs):

- Three SHA-384 hashers are fed section *data*, never section headers. PCR0 ("image"): kernel,
  cmdline and every ramdisk, in file order. PCR1 ("bootstrap"): kernel, cmdline and the first
  ramdisk. PCR2 ("app"): every later ramdisk. Metadata and signature sections feed none of them.
- The hashers are ``EifHasher::new_without_cache`` (block size 0: a plain streaming SHA-384; the
  chunked ``new_with_fixed_block_size`` mode is not used for PCRs), finished with
  ``tpm_extend_finalize_reset``: PCR = SHA384(48 zero bytes || SHA384(data)), one extension of a
  zeroed register. PCR8 (signed images only) is the same extension of SHA-384 of the signing
  certificate's DER (see ``eif_sign``).
- The CRC (``EifBuilder::compute_crc``, ``EifReader::from_eif``) is ``crc::CRC_32_ISO_HDLC`` -- zlib's
  CRC-32 -- over the header without its last 4 bytes (the CRC field), then every section header and
  section data in file order. ``describe-eif`` reports whether it matches as ``CheckCRC``.

What nitro-cli feeds the builder (aws-nitro-enclaves-cli):

- ``src/lib.rs`` ``build_from_docker``: kernel ``<blobs>/bzImage`` (``Image`` on aarch64), cmdline
  the text of ``<blobs>/cmdline`` with surrounding whitespace trimmed, stored without a NUL
  (``CString::into_bytes``), and build info from the third line of ``<kernel>.config``
  (``identity.rs`` ``generate_build_info``: split on ' ', '/', '-', words 1 and 3).
- ``enclave_build/src/lib.rs``: ramdisks in order bootstrap, then application; header flags 0 for
  x86_64 and ``EIF_HDR_ARCH_ARM64`` for arm64.
- ``enclave_build/src/yaml_generator.rs`` ``get_bootstrap_ramfs``: the bootstrap ramdisk holds
  ``dev`` (directory, 0755), ``init`` (0755) and ``nsm.ko`` (0755), built by linuxkit with
  ``--format kernel+initrd-nogz``: an uncompressed cpio (aws-nitro-enclaves-sdk-bootstrap
  ``linuxkit/0002-output-Add-new-type-kernel-initrd-nogz.patch``). linuxkit v1.5.2 (the version
  nitro-cli ships) stamps every file with ``defaultModTime`` 2017-04-18 16:30:00 UTC
  (``moby/build/dir.go``), owner 0:0 (``moby.IDNumeric``), in the order of the YAML, and writes the
  cpio with its vendored ``surma/gocpio`` (see ``cpio``). ``bootstrap_ramdisk`` reproduces that.
- The metadata section is ``serde_json::to_vec(EifIdentityInfo)``: compact JSON with the keys
  ImageName, ImageVersion, BuildMetadata {BuildTime, BuildTool, BuildToolVersion, OperatingSystem,
  KernelVersion}, DockerInfo, CustomMetadata in that order; free-form values have their object keys
  sorted (serde_json's default map is a BTreeMap).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import struct
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO, Protocol

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nitro_llm import __version__
from nitro_llm.attestation.pcr import ZERO_PCR, extend
from nitro_llm.image.cpio import CpioEntry, newc_bytes
from nitro_llm.image.eif_format import (
    CRC_OFFSET,
    DEFAULT_CPUS,
    DEFAULT_MEM,
    EIF_MAGIC,
    EIF_VERSION,
    FLAG_ARCH_ARM64,
    HEADER_SIZE,
    MAX_SECTIONS,
    SECTION_HEADER,
    SECTION_HEADER_SIZE,
    EifCrcError,
    EifFormatError,
    EifHeader,
    EifSignatureError,
    SectionType,
    pack_section_header,
)
from nitro_llm.image.eif_sign import (
    PcrSignature,
    certificate_info,
    check_signing_pair,
    load_certificate,
    parse_signature_section,
    pcr8,
    signature_section,
    verify_pcr0_signature,
)
from nitro_llm.image.errors import InputMissingError

__all__ = [
    "HASH_ALGORITHM",
    "Blobs",
    "Eif",
    "EifCrcError",
    "EifFormatError",
    "EifIdentity",
    "EifMeasurements",
    "EifSection",
    "EifSignatureError",
    "bootstrap_ramdisk",
    "build_eif",
    "describe_eif",
    "measure_eif",
    "read_eif",
    "write_eif",
]

#: ``format!("{:?}", Sha384::new())`` as nitro-cli's documentation (docs/image_signing.md) prints it.
HASH_ALGORITHM = "Sha384 { ... }"
#: linuxkit's ``defaultModTime`` (2017-04-18T16:30:00Z), stamped on every bootstrap ramdisk entry.
LINUXKIT_MTIME = 1492533000
#: The oldest version with a CRC; V1 files cannot be checked, so they are refused.
MIN_VERSION = 2
KERNEL_NAMES = {"x86_64": "bzImage", "aarch64": "Image"}

_CHUNK = 1 << 20
#: Caps on sections read into memory; a kernel command line or a JSON document past these is not real.
_SMALL_LIMITS = {
    SectionType.CMDLINE: 1 << 16,
    SectionType.METADATA: 1 << 24,
    SectionType.SIGNATURE: 1 << 20,
}

Source = bytes | Path


@dataclass(frozen=True, slots=True)
class EifMeasurements:
    """PCRs as lowercase hex, as ``nitro-cli build-enclave`` / ``describe-eif`` print them."""

    pcr0: str
    pcr1: str
    pcr2: str
    pcr8: str | None = None

    def to_dict(self) -> dict[str, str]:
        """The ``Measurements`` object: a BTreeMap in nitro-cli, hence sorted keys."""
        result = {"HashAlgorithm": HASH_ALGORITHM, "PCR0": self.pcr0, "PCR1": self.pcr1, "PCR2": self.pcr2}
        if self.pcr8 is not None:
            result["PCR8"] = self.pcr8
        return result

    def pcrs(self) -> dict[int, str]:
        result = {0: self.pcr0, 1: self.pcr1, 2: self.pcr2}
        if self.pcr8 is not None:
            result[8] = self.pcr8
        return result


@dataclass(frozen=True, slots=True)
class EifIdentity:
    """The metadata section (``EifIdentityInfo``). It feeds no PCR, but it is in the file and its CRC,
    so every default is a constant: a build time taken from the clock would make two builds of the
    same inputs differ."""

    image_name: str = "nitro-llm"
    image_version: str = __version__
    build_time: str = "1970-01-01T00:00:00+00:00"
    build_tool: str = "nitro-llm"
    build_tool_version: str = __version__
    operating_system: str = "Unknown"
    kernel_version: str = "Unknown"
    docker_info: object = None
    custom: object = None

    def to_json(self) -> bytes:
        document = {
            "ImageName": self.image_name,
            "ImageVersion": self.image_version,
            "BuildMetadata": {
                "BuildTime": self.build_time,
                "BuildTool": self.build_tool,
                "BuildToolVersion": self.build_tool_version,
                "OperatingSystem": self.operating_system,
                "KernelVersion": self.kernel_version,
            },
            "DockerInfo": _sorted_json(self.docker_info),
            "CustomMetadata": _sorted_json(self.custom),
        }
        try:
            text = json.dumps(document, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise EifFormatError(f"EIF metadata is not JSON-serialisable ({exc})") from None
        return text.encode("utf-8")


@dataclass(frozen=True, slots=True)
class Blobs:
    """What nitro-cli installs under ``/usr/share/nitro_enclaves/blobs/`` and builds every EIF from."""

    kernel: Path
    kernel_config: Path | None
    cmdline: bytes
    init: bytes
    nsm_ko: bytes
    arch: str = "x86_64"

    @classmethod
    def load(cls, blobs_dir: Path, arch: str = "x86_64") -> Blobs:
        if arch not in KERNEL_NAMES:
            raise EifFormatError(f"unknown architecture {arch!r}", hint="use x86_64 or aarch64")
        blobs_dir = Path(blobs_dir)
        kernel = blobs_dir / KERNEL_NAMES[arch]
        config = kernel.with_name(kernel.name + ".config")
        for path in (kernel, blobs_dir / "cmdline", blobs_dir / "init", blobs_dir / "nsm.ko"):
            if not path.is_file():
                raise InputMissingError(
                    f"blobs/{path.name}",
                    f"not found in {blobs_dir}",
                    hint="install aws-nitro-enclaves-cli (its blobs live in /usr/share/nitro_enclaves/blobs)",
                )
        return cls(
            kernel=kernel,
            kernel_config=config if config.is_file() else None,
            cmdline=_cmdline((blobs_dir / "cmdline").read_bytes()),
            init=(blobs_dir / "init").read_bytes(),
            nsm_ko=(blobs_dir / "nsm.ko").read_bytes(),
            arch=arch,
        )

    def identity(self, custom: object = None) -> EifIdentity:
        """Build info as ``generate_build_info`` derives it from the kernel config."""
        os_name = kernel_version = "Unknown"
        if self.kernel_config is not None:
            lines = self.kernel_config.read_text(encoding="utf-8", errors="replace").splitlines()
            if len(lines) > 2:
                words = re.split(r"[ /-]", lines[2])
                os_name = words[1] if len(words) > 1 else os_name
                kernel_version = words[3] if len(words) > 3 else kernel_version
        return EifIdentity(operating_system=os_name, kernel_version=kernel_version, custom=custom)


@dataclass(frozen=True, slots=True)
class EifSection:
    index: int
    type: SectionType
    flags: int
    offset: int
    """Where the section's 12-byte header starts (what ``section_offsets`` holds)."""
    size: int
    """Bytes of data after the section header."""

    @property
    def data_offset(self) -> int:
        return self.offset + SECTION_HEADER_SIZE


@dataclass(frozen=True)
class Eif:
    """A parsed, structurally valid EIF, with the CRC and PCRs computed from its bytes."""

    path: Path
    header: EifHeader
    sections: tuple[EifSection, ...]
    computed_crc32: int
    measurements: EifMeasurements
    cmdline: str
    metadata: dict[str, object] | None
    signatures: tuple[PcrSignature, ...] = field(default=())

    @property
    def crc_ok(self) -> bool:
        return self.header.crc32 == self.computed_crc32

    @property
    def is_signed(self) -> bool:
        return bool(self.signatures)

    @property
    def arch(self) -> str:
        return "aarch64" if self.header.is_arm64 else "x86_64"

    def signature_valid(self) -> bool:
        """Whether the signature verifies with its certificate and signs this file's PCR0 (what
        ``describe-eif`` reports as SignatureCheck); raises ``EifSignatureError`` if it does not verify."""
        if not self.signatures:
            raise EifSignatureError(
                "the EIF is not signed", hint="build it with a signing certificate and key"
            )
        return verify_pcr0_signature(self.signatures[0], bytes.fromhex(self.measurements.pcr0))


def bootstrap_ramdisk(init: bytes, nsm_ko: bytes) -> bytes:
    """The first ramdisk, byte for byte as nitro-cli's linuxkit writes it (see the module docstring)."""
    entries = [
        CpioEntry("dev", 0o755, is_dir=True),
        CpioEntry("init", 0o755, data=init),
        CpioEntry("nsm.ko", 0o755, data=nsm_ko),
    ]
    return newc_bytes(
        entries, mtime=LINUXKIT_MTIME, first_inode=721, device=(3, 1), block_size=512, keep_order=True
    )


def build_eif(
    blobs_dir: Path,
    app_ramdisks: Sequence[Path],
    out: Path,
    *,
    signing_cert: Path | bytes | None = None,
    signing_key: Path | bytes | None = None,
    metadata: dict[str, object] | None = None,
    arch: str = "x86_64",
    identity: EifIdentity | None = None,
) -> EifMeasurements:
    """Assemble the EIF nitro-cli would build from these blobs and application ramdisks.

    ``metadata`` becomes CustomMetadata; ``identity`` replaces the whole metadata section.
    """
    if not app_ramdisks:
        raise EifFormatError("an EIF needs at least one application ramdisk", hint="pass the rootfs cpio")
    blobs = Blobs.load(blobs_dir, arch)
    return write_eif(
        kernel=blobs.kernel,
        cmdline=blobs.cmdline,
        ramdisks=[bootstrap_ramdisk(blobs.init, blobs.nsm_ko), *app_ramdisks],
        out=out,
        arch=arch,
        identity=identity if identity is not None else blobs.identity(metadata),
        signing_cert=signing_cert,
        signing_key=signing_key,
    )


def write_eif(
    *,
    kernel: Source,
    cmdline: bytes,
    ramdisks: Sequence[Source],
    out: Path,
    arch: str = "x86_64",
    identity: EifIdentity | None = None,
    signing_cert: Path | bytes | None = None,
    signing_key: Path | bytes | None = None,
) -> EifMeasurements:
    """``EifBuilder::write_to``: sections kernel, cmdline, metadata, ramdisks (bootstrap first),
    signature. Inputs are streamed once, so a multi-gigabyte application ramdisk is never held in
    memory; the PCRs and the CRC are computed from the bytes as they are written. The file appears
    at ``out`` only when complete."""
    if not ramdisks:
        raise EifFormatError("an EIF needs at least one ramdisk")
    if arch not in KERNEL_NAMES:
        raise EifFormatError(f"unknown architecture {arch!r}", hint="use x86_64 or aarch64")
    if b"\0" in cmdline:
        raise EifFormatError("the kernel command line contains a NUL byte")
    signer = _load_signer(signing_cert, signing_key)
    sections: list[tuple[SectionType, Source]] = [
        (SectionType.KERNEL, kernel),
        (SectionType.CMDLINE, cmdline),
        (SectionType.METADATA, (identity or EifIdentity()).to_json()),
        *((SectionType.RAMDISK, ramdisk) for ramdisk in ramdisks),
    ]
    if len(sections) + (signer is not None) > MAX_SECTIONS:
        raise EifFormatError(f"an EIF holds at most {MAX_SECTIONS} sections")
    out = Path(out)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        with open(tmp, "w+b") as file:
            measurements, layout = _write_sections(file, sections, signer)
            header = EifHeader(
                version=EIF_VERSION,
                flags=FLAG_ARCH_ARM64 if arch == "aarch64" else 0,
                default_mem=DEFAULT_MEM,
                default_cpus=DEFAULT_CPUS,
                num_sections=len(layout),
                section_offsets=tuple(offset for offset, _ in layout),
                section_sizes=tuple(size for _, size in layout),
            )
            packed = header.pack()
            file.seek(0)
            file.write(packed)
            crc = _crc_of_file(file, packed)
            file.seek(CRC_OFFSET)
            file.write(struct.pack(">I", crc))
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return measurements


def read_eif(path: Path, *, verify_crc: bool = True) -> Eif:
    """Parse and check an EIF: magic, version, section table against the sections actually present,
    section types and order, no trailing bytes, the signature section, and (unless ``verify_crc`` is
    false, as ``describe_eif`` needs) the CRC. PCRs are computed in the same single pass."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            return _read(path, file, os.fstat(file.fileno()).st_size, verify_crc)
    except OSError as exc:
        raise EifFormatError(f"cannot read {path} ({exc.strerror})") from None


def measure_eif(path: Path) -> dict[str, str]:
    """The ``Measurements`` object of ``describe-eif``; refuses a file whose CRC does not match."""
    return read_eif(path).measurements.to_dict()


def describe_eif(path: Path) -> dict[str, object]:
    """What ``nitro-cli describe-eif`` prints, as a dict (``EifDescribeInfo`` in
    ``src/common/json_output.rs``): EifVersion, Measurements, IsSigned, [SigningCertificate],
    CheckCRC, [SignatureCheck], [ImageName], [ImageVersion], [Metadata]. A signature that does not
    verify with its certificate is an error, as in nitro-cli."""
    eif = read_eif(path, verify_crc=False)
    info: dict[str, object] = {
        "EifVersion": eif.header.version,
        "Measurements": eif.measurements.to_dict(),
        "IsSigned": eif.is_signed,
    }
    sign_check = None
    if eif.is_signed:
        info["SigningCertificate"] = certificate_info(load_certificate(eif.signatures[0].certificate_pem))
        sign_check = eif.signature_valid()
    info["CheckCRC"] = eif.crc_ok
    if sign_check is not None:
        info["SignatureCheck"] = sign_check
    if eif.metadata is not None:
        info.update(_describe_metadata(eif.metadata))
    return info


# -- writing ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Signer:
    certificate_pem: bytes
    certificate: x509.Certificate
    key: ec.EllipticCurvePrivateKey


class _Updatable(Protocol):
    def update(self, data: bytes, /) -> None: ...


class _Hashers:
    """The three EifHasher streams of ``get_pcrs``, fed by section type."""

    def __init__(self) -> None:
        self.image = hashlib.sha384()
        self.bootstrap = hashlib.sha384()
        self.app = hashlib.sha384()
        self.ramdisks = 0

    def feeder(self, section_type: SectionType) -> list[_Updatable]:
        if section_type in (SectionType.KERNEL, SectionType.CMDLINE):
            return [self.image, self.bootstrap]
        if section_type is SectionType.RAMDISK:
            self.ramdisks += 1
            return [self.image, self.bootstrap if self.ramdisks == 1 else self.app]
        return []

    def measurements(self, certificate: x509.Certificate | None) -> EifMeasurements:
        return EifMeasurements(
            pcr0=extend(ZERO_PCR, self.image.digest()).hex(),
            pcr1=extend(ZERO_PCR, self.bootstrap.digest()).hex(),
            pcr2=extend(ZERO_PCR, self.app.digest()).hex(),
            pcr8=pcr8(certificate).hex() if certificate is not None else None,
        )


def _write_sections(
    file: BinaryIO, sections: list[tuple[SectionType, Source]], signer: _Signer | None
) -> tuple[EifMeasurements, list[tuple[int, int]]]:
    hashers = _Hashers()
    layout: list[tuple[int, int]] = []
    position = HEADER_SIZE
    file.seek(position)
    for section_type, source in sections:
        size = _source_size(source)
        file.write(pack_section_header(section_type, size))
        targets = hashers.feeder(section_type)
        written = 0
        for chunk in _chunks(source):
            file.write(chunk)
            for target in targets:
                target.update(chunk)
            written += len(chunk)
        if written != size:
            raise EifFormatError(f"a {section_type.name.lower()} input changed size while the EIF was built")
        layout.append((position, size))
        position += SECTION_HEADER_SIZE + size
    measurements = hashers.measurements(signer.certificate if signer else None)
    if signer is not None:
        signature = signature_section(signer.certificate_pem, signer.key, bytes.fromhex(measurements.pcr0))
        file.write(pack_section_header(SectionType.SIGNATURE, len(signature)))
        file.write(signature)
        layout.append((position, len(signature)))
    return measurements, layout


def _crc_of_file(file: BinaryIO, header: bytes) -> int:
    crc = zlib.crc32(header[:CRC_OFFSET])
    file.seek(HEADER_SIZE)
    while chunk := file.read(_CHUNK):
        crc = zlib.crc32(chunk, crc)
    return crc


def _load_signer(cert: Path | bytes | None, key: Path | bytes | None) -> _Signer | None:
    if cert is None and key is None:
        return None
    if cert is None or key is None:
        raise EifSignatureError("signing needs both a certificate and its private key")
    certificate_pem = cert if isinstance(cert, bytes) else Path(cert).read_bytes()
    key_pem = key if isinstance(key, bytes) else Path(key).read_bytes()
    certificate = load_certificate(certificate_pem)
    try:
        private_key = serialization.load_pem_private_key(key_pem, password=None)
    except (ValueError, TypeError):
        raise EifSignatureError("the signing key is not an unencrypted PEM private key") from None
    if not isinstance(private_key, ec.EllipticCurvePrivateKey):
        raise EifSignatureError("nitro-cli signs only with ECDSA keys", hint="use an ECDSA P-384 key")
    check_signing_pair(certificate, private_key)
    return _Signer(certificate_pem, certificate, private_key)


def _source_size(source: Source) -> int:
    return len(source) if isinstance(source, bytes) else Path(source).stat().st_size


def _chunks(source: Source) -> Iterator[bytes]:
    if isinstance(source, bytes):
        for start in range(0, len(source), _CHUNK):
            yield source[start : start + _CHUNK]
        return
    with open(source, "rb") as file:
        while chunk := file.read(_CHUNK):
            yield chunk


def _cmdline(raw: bytes) -> bytes:
    """``cmdline.trim()`` of the blob (Rust trims Unicode whitespace at both ends)."""
    try:
        return raw.decode("utf-8").strip().encode("utf-8")
    except UnicodeDecodeError:
        raise EifFormatError("blobs/cmdline is not UTF-8 text") from None


def _sorted_json(value: object) -> object:
    if isinstance(value, dict):
        return {key: _sorted_json(value[key]) for key in sorted(value)}
    if isinstance(value, list | tuple):
        return [_sorted_json(item) for item in value]
    return value


# -- reading ---------------------------------------------------------------------------------------


def _read(path: Path, file: BinaryIO, file_size: int, verify_crc: bool) -> Eif:
    raw = file.read(HEADER_SIZE)
    if len(raw) < HEADER_SIZE:
        raise EifFormatError(
            f"{path.name} is {len(raw)} bytes, shorter than the {HEADER_SIZE}-byte EIF header"
        )
    header = EifHeader.unpack(raw)
    _check_header(header)
    crc = zlib.crc32(raw[:CRC_OFFSET])
    hashers = _Hashers()
    small: dict[SectionType, bytes] = {}
    sections: list[EifSection] = []
    position = HEADER_SIZE
    for index in range(header.num_sections):
        section_raw = file.read(SECTION_HEADER_SIZE)
        if len(section_raw) < SECTION_HEADER_SIZE:
            raise EifFormatError(
                f"the file ends before section {index} of the {header.num_sections} its header lists"
            )
        type_value, flags, size = SECTION_HEADER.unpack(section_raw)
        section = _section(header, index, type_value, flags, position, size, file_size)
        crc = zlib.crc32(section_raw, crc)
        targets = hashers.feeder(section.type)
        limit = _SMALL_LIMITS.get(section.type)
        if limit is not None and size > limit:
            raise EifFormatError(f"the {section.type.name.lower()} section is {size} bytes, above {limit}")
        kept = bytearray()
        remaining = size
        while remaining:
            chunk = file.read(min(_CHUNK, remaining))
            if not chunk:
                raise EifFormatError(f"the file ends inside section {index}")
            crc = zlib.crc32(chunk, crc)
            for target in targets:
                target.update(chunk)
            if limit is not None:
                kept += chunk
            remaining -= len(chunk)
        if limit is not None:
            small[section.type] = bytes(kept)
        sections.append(section)
        position += SECTION_HEADER_SIZE + size
    if position != file_size:
        raise EifFormatError(
            f"{file_size - position} bytes follow the last of the {header.num_sections} sections the header "
            "lists: the section count is wrong or data was appended"
        )
    _check_layout(sections)
    if verify_crc and header.crc32 != crc:
        raise EifCrcError(f"CRC32 mismatch: header says {header.crc32:08x}, the file hashes to {crc:08x}")
    signatures = (
        tuple(parse_signature_section(small[SectionType.SIGNATURE])) if SectionType.SIGNATURE in small else ()
    )
    certificate = load_certificate(signatures[0].certificate_pem) if signatures else None
    return Eif(
        path=path,
        header=header,
        sections=tuple(sections),
        computed_crc32=crc,
        measurements=hashers.measurements(certificate),
        cmdline=_text(small[SectionType.CMDLINE], "cmdline"),
        metadata=_metadata(small.get(SectionType.METADATA)),
        signatures=signatures,
    )


def _check_header(header: EifHeader) -> None:
    if header.magic != EIF_MAGIC:
        raise EifFormatError(f"not an EIF: magic {header.magic!r}, expected {EIF_MAGIC!r}")
    if not MIN_VERSION <= header.version <= EIF_VERSION:
        raise EifFormatError(
            f"EIF version {header.version} is not supported (this reader knows {MIN_VERSION}..{EIF_VERSION})"
        )
    if not 1 <= header.num_sections <= MAX_SECTIONS:
        raise EifFormatError(f"the header lists {header.num_sections} sections; an EIF has 1..{MAX_SECTIONS}")
    count = header.num_sections
    if any(header.section_offsets[count:]) or any(header.section_sizes[count:]):
        raise EifFormatError(f"the section table has entries past the {count} sections the header counts")


def _section(
    header: EifHeader, index: int, type_value: int, flags: int, position: int, size: int, file_size: int
) -> EifSection:
    if not SectionType.KERNEL <= type_value <= SectionType.METADATA:
        raise EifFormatError(f"section {index} has invalid type {type_value}")
    if header.section_offsets[index] != position or header.section_sizes[index] != size:
        raise EifFormatError(
            f"the header's table puts section {index} at {header.section_offsets[index]} "
            f"({header.section_sizes[index]} bytes), but it is at {position} ({size} bytes)"
        )
    if position + SECTION_HEADER_SIZE + size > file_size:
        raise EifFormatError(f"section {index} ({size} bytes) runs past the end of the file: truncated")
    return EifSection(index, SectionType(type_value), flags, position, size)


def _check_layout(sections: list[EifSection]) -> None:
    """What every builder (EifBuilder, eif_build, ``nitro-cli sign-eif``) produces and the loader needs."""
    types = [section.type for section in sections]
    if types[:2] != [SectionType.KERNEL, SectionType.CMDLINE]:
        raise EifFormatError("an EIF starts with the kernel section, then the cmdline section")
    for unique in (SectionType.KERNEL, SectionType.CMDLINE, SectionType.METADATA, SectionType.SIGNATURE):
        if types.count(unique) > 1:
            raise EifFormatError(f"an EIF has at most one {unique.name.lower()} section")
    if SectionType.RAMDISK not in types:
        raise EifFormatError("an EIF needs at least one ramdisk (the bootstrap ramdisk)")
    if SectionType.SIGNATURE in types and types[-1] is not SectionType.SIGNATURE:
        raise EifFormatError("the signature section must be the last one")


def _text(data: bytes, what: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise EifFormatError(f"the {what} section is not UTF-8") from None


def _metadata(data: bytes | None) -> dict[str, object] | None:
    if data is None:
        return None
    try:
        value: object = json.loads(_text(data, "metadata"))
    except json.JSONDecodeError as exc:
        raise EifFormatError(f"the metadata section is not JSON (line {exc.lineno})") from None
    if not isinstance(value, dict) or not isinstance(value.get("BuildMetadata"), dict):
        raise EifFormatError("the metadata section is not an EifIdentityInfo object")
    if not {"ImageName", "ImageVersion", "DockerInfo"} <= value.keys():
        raise EifFormatError("the metadata section lacks ImageName, ImageVersion or DockerInfo")
    return {str(key): item for key, item in value.items()}


def _describe_metadata(metadata: dict[str, object]) -> dict[str, object]:
    """ImageName / ImageVersion / Metadata of describe-eif (``MetadataDescribeInfo``), where the
    custom metadata object is flattened into Metadata and left out when null."""
    build = metadata["BuildMetadata"]
    assert isinstance(build, dict)
    described: dict[str, object] = {
        "BuildTime": build.get("BuildTime"),
        "BuildTool": build.get("BuildTool"),
        "BuildToolVersion": build.get("BuildToolVersion"),
        "OperatingSystem": build.get("OperatingSystem"),
        "KernelVersion": build.get("KernelVersion"),
        "DockerInfo": metadata.get("DockerInfo"),
    }
    custom = metadata.get("CustomMetadata")
    if isinstance(custom, dict):
        described.update(custom)
    elif custom is not None:
        raise EifFormatError("CustomMetadata must be a JSON object to be described")
    return {
        "ImageName": metadata["ImageName"],
        "ImageVersion": metadata["ImageVersion"],
        "Metadata": described,
    }
