"""The root filesystem as a tarball, byte for byte the same from the same tree.

Operators who run nitro-cli themselves load it with ``docker import`` and get the same root
filesystem as the EIF built here (the DESIGN's "Operators who prefer nitro-cli"). Every header is
built from the normalised walk (``tree``): owner 0:0 with no names, mtime ``SOURCE_DATE_EPOCH``,
POSIX pax format only where a field needs it, members in sorted order, paths ``./``-less.
"""

from __future__ import annotations

import tarfile
from pathlib import Path

from nitro_llm.image.tree import Node

_TYPES = {"dir": tarfile.DIRTYPE, "file": tarfile.REGTYPE, "symlink": tarfile.SYMTYPE}


def write_tar(nodes: list[Node], out: Path, epoch: int) -> None:
    with out.open("wb") as raw, tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for node in nodes:
            info = tarfile.TarInfo(node.rel)
            info.type = _TYPES[node.kind]
            info.mode = node.mode
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            info.mtime = epoch
            if node.kind == "symlink":
                info.linkname = node.link or ""
            if node.kind == "file":
                info.size = node.size
                with node.path.open("rb") as data:
                    tar.addfile(info, data)
            else:
                tar.addfile(info)
