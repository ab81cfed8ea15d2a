"""The staged root filesystem as one sorted list of entries, and the normalisation that makes it
the same on every machine.

Both outputs (the rootfs tarball and the application ramdisk) are written from this one walk, so
they cannot disagree. Only what the kernel and the Nitro init need survives: path, type (directory,
regular file, symlink), permission bits and content. Owners become root, times become
``SOURCE_DATE_EPOCH``; hard links become separate files; anything else (devices, FIFOs, sockets)
is refused, since nothing in the image should need one and the init creates ``/dev`` itself.
"""

from __future__ import annotations

import os
import stat
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.image.errors import LayoutError


@dataclass(frozen=True)
class Node:
    rel: str  # "usr/bin/python3.11": relative, "/"-separated, no "." or ".."
    path: Path
    mode: int  # permission bits only
    kind: str  # "dir", "file" or "symlink"
    link: str | None = None
    size: int = 0


def walk(root: Path) -> list[Node]:
    """Every entry under ``root`` (not ``root`` itself), parents before children, in byte order
    of their paths."""
    nodes: list[Node] = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        base = Path(dirpath)
        for name in [*dirnames, *sorted(filenames)]:
            path = base / name
            rel = path.relative_to(root).as_posix()
            st = os.lstat(path)
            mode = stat.S_IMODE(st.st_mode)
            if stat.S_ISLNK(st.st_mode):
                nodes.append(Node(rel, path, 0o777, "symlink", link=os.readlink(path)))
            elif stat.S_ISDIR(st.st_mode):
                nodes.append(Node(rel, path, mode, "dir"))
            elif stat.S_ISREG(st.st_mode):
                nodes.append(Node(rel, path, mode, "file", size=st.st_size))
            else:
                raise LayoutError(f"{rel} is a device, FIFO or socket; the image holds none")
    nodes.sort(key=lambda n: n.rel.encode("utf-8"))
    return nodes


def normalise(root: Path, nodes: list[Node], epoch: int) -> None:
    """Give the staged directory itself the archive's times (and root ownership when the builder
    is root), so that local mode's chroot sees what the ramdisk holds."""
    as_root = os.geteuid() == 0
    for node in [*reversed(nodes), Node("", root, 0o755, "dir")]:
        if as_root:
            os.lchown(node.path, 0, 0)
        os.utime(node.path, (epoch, epoch), follow_symlinks=False)
