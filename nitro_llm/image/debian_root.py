"""Unpack the locked Debian packages into a directory, as dpkg would have left their files.

No maintainer script runs: the image has no shell to run them with, and the one thing they would
have done that the enclave needs (the CA bundle that ``update-ca-certificates`` writes) is done in
``system_files``. Documentation other than copyright notices is left out (it only costs enclave
memory); licences stay, as Debian's own slim images keep them.

Packages are unpacked in name order, and a file shipped by two packages must be identical in
both, so the order cannot change the result.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path, PurePosixPath

from nitro_llm.image.debs import data_tar, fetch
from nitro_llm.image.errors import LayoutError
from nitro_llm.image.fs import ensure_dir, write_file
from nitro_llm.image.lock import DebianLock, DebPackage
from nitro_llm.image.progress import Progress

# dpkg "path-exclude" rules of Debian's minimal images, applied to what the enclave never reads.
_DROPPED_TREES = ("usr/share/man/", "usr/share/info/", "usr/share/lintian/", "usr/share/locale/")
_DOC_TREE = "usr/share/doc/"


def _dropped(path: str) -> bool:
    """Whether dpkg's path-exclude rules would skip ``path`` (directories end in "/")."""
    if path.startswith(_DROPPED_TREES):
        return True
    if path.startswith(_DOC_TREE):
        parts = path.split("/")  # "usr", "share", "doc", <package>, <file>...
        keep = len(parts) < 5 or (len(parts) == 5 and parts[4] in ("", "copyright"))
        return not keep
    return False


def _member_path(member: tarfile.TarInfo, label: str) -> str:
    path = PurePosixPath(member.name)
    parts = [p for p in path.parts if p not in ("", ".")]
    if path.is_absolute() or ".." in parts:
        raise LayoutError(f"{label}: unsafe path {member.name!r} in its data.tar")
    return "/".join(parts)


def unpack_packages(
    lock: DebianLock, root: Path, cache_dir: Path, progress: Progress | None = None
) -> dict[str, str]:
    """Fill ``root`` with the files of every locked package; returns path -> owning package."""
    progress = progress or Progress()
    owners: dict[str, str] = {}
    packages = sorted(lock.packages, key=lambda p: p.name)
    progress.step(f"unpacking {len(packages)} Debian packages")
    for package in packages:
        deb = fetch(package, cache_dir, progress)
        with data_tar(deb, f"Debian package {package.label}") as tar:
            _unpack(tar, package, root, owners)
    return owners


def _unpack(tar: tarfile.TarFile, package: DebPackage, root: Path, owners: dict[str, str]) -> None:
    label = f"Debian package {package.label}"
    contents: dict[str, bytes] = {}
    for member in tar.getmembers():
        rel = _member_path(member, label)
        if not rel or _dropped(rel + ("/" if member.isdir() else "")):
            continue
        if member.uid != 0 or member.gid != 0:
            raise LayoutError(
                f"{label}: {rel} is owned by {member.uid}:{member.gid}; the image only has root-owned files",
                hint="leave the package out of the lock (DEFAULT_EXCLUDED) or extend the image builder",
            )
        target = root / rel
        _refuse_symlinked_parent(root, rel, label)
        ensure_dir(target.parent)
        mode = member.mode & 0o7777
        if member.isdir():
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                raise LayoutError(f"{label}: {rel} is a directory here and a file in {owners.get(rel)}")
            ensure_dir(target)
            os.chmod(target, mode)
            continue
        if member.isfile() or member.islnk():
            if member.isfile():
                extracted = tar.extractfile(member)
                data = extracted.read() if extracted is not None else b""
            else:
                source = _member_path(tarfile.TarInfo(member.linkname), label)
                if source not in contents:
                    raise LayoutError(f"{label}: hard link {rel} points at {source}, which was not unpacked")
                data = contents[source]
            contents[rel] = data
            _place(target, rel, package, owners, content=data, mode=mode)
        elif member.issym():
            link = member.linkname
            _place(target, rel, package, owners, link=link)
        else:
            raise LayoutError(f"{label}: {rel} is a device, FIFO or other special file; the image has none")


def _refuse_symlinked_parent(root: Path, rel: str, label: str) -> None:
    """A member below a symlink another member created would be written wherever the link points,
    outside the image if it is absolute: refuse rather than follow."""
    current = root
    for part in rel.split("/")[:-1]:
        current = current / part
        if current.is_symlink():
            raise LayoutError(f"{label}: {rel} lies below the symlink {current.relative_to(root)}")


def _place(
    target: Path,
    rel: str,
    package: DebPackage,
    owners: dict[str, str],
    *,
    content: bytes | None = None,
    mode: int = 0o644,
    link: str | None = None,
) -> None:
    """Create ``rel`` unless another package shipped the very same file or link already."""
    if target.is_symlink() or target.exists():
        same = (link is not None and target.is_symlink() and os.readlink(target) == link) or (
            content is not None
            and target.is_file()
            and not target.is_symlink()
            and target.read_bytes() == content
        )
        if not same:
            raise LayoutError(f"{rel} differs between Debian packages {owners.get(rel)} and {package.name}")
        return
    if link is not None:
        target.symlink_to(link)
    else:
        write_file(target, content or b"", mode)
    owners[rel] = package.name
