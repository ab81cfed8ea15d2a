"""Locked ``.deb`` files: fetched once into a cache, checked against the lock on every use, and
read without dpkg.

The cache only saves downloads; it is never trusted: a cached file whose SHA-256 differs from the
lock fails the build, naming the package, rather than being quietly fetched again (a changed file
on disk is worth a look). A ``.deb`` is an ``ar`` archive whose ``data.tar.*`` member holds the
files; reading it here keeps the build free of dpkg and of root.
"""

from __future__ import annotations

import io
import lzma
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from nitro_llm.image.digest import file_sha256
from nitro_llm.image.errors import InputMismatchError, InputMissingError
from nitro_llm.image.lock import DebPackage
from nitro_llm.image.progress import Progress

_AR_MAGIC = b"!<arch>\n"
_AR_HEADER = 60
_TIMEOUT = 120


def cached_path(cache_dir: Path, package: DebPackage) -> Path:
    return cache_dir / package.url.rsplit("/", 1)[-1]


def fetch(package: DebPackage, cache_dir: Path, progress: Progress | None = None) -> Path:
    """The package's file from the cache, downloaded first if absent; always hash-checked."""
    path = cached_path(cache_dir, package)
    if not path.exists():
        (progress or Progress()).step(f"downloading {package.label} ({package.size // 1024} KiB)")
        _download(package, path)
    digest = file_sha256(path)
    if digest != package.sha256:
        raise InputMismatchError(
            f"Debian package {package.label}",
            f"{path} has SHA-256 {digest}, the lock says {package.sha256}",
            hint=f"delete {path} to fetch it again; if the mirror serves the new bytes, "
            "run 'nitro-llm image lock check' and review the update",
        )
    return path


def _download(package: DebPackage, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".part")
    try:
        with urllib.request.urlopen(package.url, timeout=_TIMEOUT) as response, partial.open("wb") as out:  # noqa: S310 (the URL comes from the reviewed lock; bytes are hash-checked)
            while block := response.read(1 << 20):
                out.write(block)
    except (urllib.error.URLError, OSError) as exc:
        partial.unlink(missing_ok=True)
        raise InputMissingError(
            f"Debian package {package.label}",
            f"cannot download {package.url} ({exc})",
            hint="check the network; if the mirror dropped this version, run "
            "'nitro-llm image lock update' and review the new lock",
        ) from None
    os.replace(partial, path)


def data_tar(deb: Path, label: str) -> tarfile.TarFile:
    """The ``data.tar`` member of a ``.deb``, opened for reading (xz, gzip or uncompressed)."""
    raw = deb.read_bytes()
    if not raw.startswith(_AR_MAGIC):
        raise InputMismatchError(label, f"{deb} is not a Debian package (no ar header)")
    offset = len(_AR_MAGIC)
    while offset + _AR_HEADER <= len(raw):
        header = raw[offset : offset + _AR_HEADER]
        name = header[:16].decode("ascii", "replace").strip().rstrip("/")
        size = int(header[48:58].decode("ascii").strip())
        body = raw[offset + _AR_HEADER : offset + _AR_HEADER + size]
        offset += _AR_HEADER + size + (size % 2)
        if name.startswith("data.tar"):
            if name.endswith(".xz"):
                body = lzma.decompress(body)
            elif not name.endswith((".tar", ".gz")):
                raise InputMismatchError(label, f"{deb}: unsupported member {name}")
            return tarfile.open(fileobj=io.BytesIO(body), mode="r:*")
    raise InputMismatchError(label, f"{deb} has no data.tar member")
