"""The on-disk layout of an Enclave Image Format (EIF) file, and the errors about it.

Every number here is read from aws-nitro-enclaves-image-format, ``src/defs/mod.rs``: a reader and
a writer that disagree with the Nitro hypervisor on one field boot nothing, or measure something
else than what the key policy pins, so nothing is guessed.

- ``EIF_MAGIC = [46, 101, 105, 102]`` (".eif"); ``CURRENT_VERSION = 4`` (V2 added the CRC, V3 the
  signature section, V4 the metadata section); ``MAX_NUM_SECTIONS = 32``;
  ``EIF_HDR_ARCH_ARM64 = 0x1`` in the header flags (cleared for x86_64).
- ``EifHeader``, all big endian, 548 bytes (``test_eif_header_size``): magic [u8; 4], version u16,
  flags u16, default_mem u64, default_cpus u64, reserved u16, num_sections u16,
  section_offsets [u64; 32], section_sizes [u64; 32], unused u32, eif_crc32 u32. The CRC is the
  last field so that it can cover everything before it.
- ``EifSectionHeader``, big endian, 12 bytes (``test_eif_section_header_size``): section_type u16,
  flags u16, section_size u64. ``section_offsets[i]`` points at this header; ``section_sizes[i]``
  and ``section_size`` count only the data after it.
- ``EifSectionType``: Invalid 0, Kernel 1, Cmdline 2, Ramdisk 3, Signature 4, Metadata 5.
- ``EifBuilder`` (``src/utils/mod.rs``) writes default_mem 1 GiB and default_cpus 2, reserved and
  unused 0, every section's flags 0, and the sections in the order kernel, cmdline, metadata,
  ramdisks (the bootstrap one first), signature.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from enum import IntEnum

from nitro_llm.image.errors import ImageError

EIF_MAGIC = b".eif"
EIF_VERSION = 4
MAX_SECTIONS = 32
FLAG_ARCH_ARM64 = 0x1
DEFAULT_MEM = 1024 * 1024 * 1024
DEFAULT_CPUS = 2

HEADER = struct.Struct(f">4sHHQQHH{MAX_SECTIONS}Q{MAX_SECTIONS}QII")
SECTION_HEADER = struct.Struct(">HHQ")
HEADER_SIZE = HEADER.size
SECTION_HEADER_SIZE = SECTION_HEADER.size
#: Where ``eif_crc32`` sits: the last 4 bytes of the header, the only bytes the CRC skips.
CRC_OFFSET = HEADER_SIZE - 4

assert HEADER_SIZE == 548 and SECTION_HEADER_SIZE == 12  # the spec's own unit tests pin these


class SectionType(IntEnum):
    INVALID = 0
    KERNEL = 1
    CMDLINE = 2
    RAMDISK = 3
    SIGNATURE = 4
    METADATA = 5


# The bytes are not an EIF this reader accepts (magic, version, layout, CRC, signature).
class EifFormatError(ImageError, code="eif_format_invalid"):
    """rebuild the EIF, or download it again: a changed byte changes the PCRs KMS pins"""


# The header's CRC32 does not match the file: it was damaged or edited after it was built.
class EifCrcError(EifFormatError, code="eif_crc_mismatch"):
    pass


# The signature section is malformed or does not verify with its own certificate.
class EifSignatureError(EifFormatError, code="eif_signature_invalid"):
    """sign the EIF again with the certificate and its private key"""


@dataclass(frozen=True, slots=True)
class EifHeader:
    version: int
    flags: int
    default_mem: int
    default_cpus: int
    num_sections: int
    section_offsets: tuple[int, ...]
    section_sizes: tuple[int, ...]
    crc32: int = 0
    reserved: int = 0
    unused: int = 0
    magic: bytes = EIF_MAGIC

    @property
    def is_arm64(self) -> bool:
        return bool(self.flags & FLAG_ARCH_ARM64)

    def pack(self) -> bytes:
        offsets = _table(self.section_offsets, "offsets")
        sizes = _table(self.section_sizes, "sizes")
        return HEADER.pack(
            self.magic,
            self.version,
            self.flags,
            self.default_mem,
            self.default_cpus,
            self.reserved,
            self.num_sections,
            *offsets,
            *sizes,
            self.unused,
            self.crc32,
        )

    @classmethod
    def unpack(cls, data: bytes) -> EifHeader:
        if len(data) != HEADER_SIZE:
            raise EifFormatError(f"an EIF header is {HEADER_SIZE} bytes, got {len(data)}")
        fields = HEADER.unpack(data)
        magic, version, flags, mem, cpus, reserved, count = fields[:7]
        offsets = tuple(fields[7 : 7 + MAX_SECTIONS])
        sizes = tuple(fields[7 + MAX_SECTIONS : 7 + 2 * MAX_SECTIONS])
        unused, crc = fields[-2:]
        return cls(version, flags, mem, cpus, count, offsets, sizes, crc, reserved, unused, magic)


def pack_section_header(section_type: SectionType, size: int, flags: int = 0) -> bytes:
    return SECTION_HEADER.pack(int(section_type), flags, size)


def _table(values: tuple[int, ...], what: str) -> tuple[int, ...]:
    if len(values) > MAX_SECTIONS:
        raise EifFormatError(f"an EIF holds at most {MAX_SECTIONS} sections, got {len(values)} {what}")
    return values + (0,) * (MAX_SECTIONS - len(values))
