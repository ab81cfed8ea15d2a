"""Deterministic cpio "newc" archives: the format the Linux kernel unpacks as an initramfs.

Every ramdisk section of an EIF is one of these, and its bytes feed PCR1 or PCR2, so the archive
must come out byte for byte the same from the same inputs: fixed mtime, owner root (uid/gid 0),
entries in a fixed order, fixed inode numbers. Host tools (GNU cpio, bsdtar) copy mtimes, owners
and inode numbers from the build machine, which is exactly what a reproducible measurement cannot
have.

Hand-written rather than a dependency: the standard library has no cpio module, and the only PyPI
writer (``cpiofile`` 0.003, last released in 2011) is unmaintained. The format is small: per entry a
110-byte ASCII header (``070701`` then 13 fields of 8 hex digits: ino, mode, uid, gid, nlink, mtime,
filesize, devmajor, devminor, rdevmajor, rdevminor, namesize, check), the NUL-terminated name padded
to 4 bytes, the data padded to 4 bytes, and a ``TRAILER!!!`` entry (kernel
``Documentation/driver-api/early-userspace/buffer-format.rst``).

The knobs (first inode, device numbers, block padding) exist so one writer can also reproduce the
archive nitro-cli's linuxkit writes for the bootstrap ramdisk: linuxkit's vendored
``github.com/surma/gocpio/writer.go`` numbers inodes from 721, writes devmajor 3 / devminor 1 into
every header, gives directories nlink 2 and everything else nlink 1, writes hex in lowercase, and
pads the archive after the trailer to a multiple of 512 bytes.
"""

from __future__ import annotations

import io
from collections.abc import Iterable
from dataclasses import dataclass
from typing import BinaryIO

from nitro_llm.image.errors import LayoutError

MAGIC = b"070701"
TRAILER = "TRAILER!!!"
HEADER_SIZE = 110

#: File type bits of ``st_mode`` (``S_IFDIR``, ``S_IFREG``, ``S_IFLNK``).
S_IFDIR = 0o040000
S_IFREG = 0o100000
S_IFLNK = 0o120000


@dataclass(frozen=True, slots=True)
class CpioEntry:
    """One archive member, owned by root.

    ``path`` is relative ("usr/bin/python3", no leading "/" or "./"). ``mode`` holds only the
    permission bits (0o7777); the type comes from ``is_dir`` / ``symlink``, so a caller cannot ask
    for a device node or a FIFO by accident.
    """

    path: str
    mode: int
    data: bytes = b""
    symlink: str | None = None
    is_dir: bool = False

    @property
    def st_mode(self) -> int:
        if self.is_dir:
            return S_IFDIR | self.mode
        if self.symlink is not None:
            return S_IFLNK | self.mode
        return S_IFREG | self.mode

    @property
    def payload(self) -> bytes:
        """What follows the header: file contents, or the link target for a symlink."""
        if self.symlink is not None:
            return self.symlink.encode("utf-8")
        return self.data


def write_newc(
    entries: Iterable[CpioEntry],
    out: BinaryIO,
    *,
    mtime: int = 0,
    first_inode: int = 1,
    device: tuple[int, int] = (0, 0),
    block_size: int = 512,
    keep_order: bool = False,
) -> int:
    """Write a complete newc archive to ``out``; return the number of bytes written.

    Entries are sorted by path unless ``keep_order``: a path sorts after every one of its prefixes,
    so a directory always comes before what it contains (the kernel creates files in archive
    order) and the caller's iteration order cannot change the bytes. Only the trailer has mtime 0,
    as in linuxkit's writer.
    """
    items = list(entries)
    _check(items)
    if not keep_order:
        items.sort(key=lambda entry: entry.path.encode("utf-8"))
    writer = _Writer(out, mtime=mtime, inode=first_inode, device=device)
    for entry in items:
        writer.entry(entry.path, entry.st_mode, entry.payload, nlink=2 if entry.is_dir else 1)
    writer.entry(TRAILER, 0, b"", nlink=1, mtime=0)
    writer.pad(block_size)
    return writer.written


def newc_bytes(
    entries: Iterable[CpioEntry],
    *,
    mtime: int = 0,
    first_inode: int = 1,
    device: tuple[int, int] = (0, 0),
    block_size: int = 512,
    keep_order: bool = False,
) -> bytes:
    """``write_newc`` into memory, for archives small enough to hold (the bootstrap ramdisk)."""
    buffer = io.BytesIO()
    write_newc(
        entries,
        buffer,
        mtime=mtime,
        first_inode=first_inode,
        device=device,
        block_size=block_size,
        keep_order=keep_order,
    )
    return buffer.getvalue()


class _Writer:
    def __init__(self, out: BinaryIO, *, mtime: int, inode: int, device: tuple[int, int]) -> None:
        self.out = out
        self.mtime = mtime
        self.inode = inode
        self.device = device
        self.written = 0

    def entry(self, name: str, st_mode: int, payload: bytes, *, nlink: int, mtime: int | None = None) -> None:
        encoded = name.encode("utf-8")
        fields = (
            self.inode,
            st_mode,
            0,  # uid
            0,  # gid
            nlink,
            self.mtime if mtime is None else mtime,
            len(payload),
            self.device[0],
            self.device[1],
            0,  # rdevmajor: no device nodes
            0,  # rdevminor
            len(encoded) + 1,  # the name's terminating NUL counts
            0,  # check: only the "070702" variant uses it
        )
        for value in fields:
            if not 0 <= value <= 0xFFFFFFFF:
                raise LayoutError(f"cpio field value {value} of {name!r} does not fit in 32 bits")
        self.emit(MAGIC + "".join(f"{value:08x}" for value in fields).encode("ascii"))
        self.emit(encoded + b"\0")
        self.pad(4)
        self.emit(payload)
        self.pad(4)
        self.inode += 1

    def emit(self, data: bytes) -> None:
        self.out.write(data)
        self.written += len(data)

    def pad(self, multiple: int) -> None:
        self.emit(bytes(-self.written % multiple))


def _check(entries: list[CpioEntry]) -> None:
    """Refuse what would unpack differently from what the caller meant."""
    seen: set[str] = set()
    for entry in entries:
        path = entry.path
        parts = path.split("/")
        if not path or path.startswith("/") or any(part in ("", ".", "..") for part in parts):
            raise LayoutError(f"cpio path {path!r} must be relative, without '.', '..' or empty parts")
        if "\0" in path or path == TRAILER:
            raise LayoutError(f"cpio path {path!r} is not a valid member name")
        if path in seen:
            raise LayoutError(f"cpio path {path!r} appears twice")
        seen.add(path)
        if not 0 <= entry.mode <= 0o7777:
            raise LayoutError(f"cpio mode {entry.mode:o} of {path!r} must be permission bits only")
        if entry.is_dir and entry.symlink is not None:
            raise LayoutError(f"cpio entry {path!r} cannot be both a directory and a symlink")
        if (entry.is_dir or entry.symlink is not None) and entry.data:
            raise LayoutError(f"cpio entry {path!r} is a directory or symlink and cannot carry data")
