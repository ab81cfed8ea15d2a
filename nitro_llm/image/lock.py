"""The Debian lock: every package of the enclave's root filesystem at an exact version and SHA-256.

The image's PCRs are pinned in the KMS key policy, so the image must be the same bytes on every
build of a commit; "latest bookworm" is not an input, a list of ``.deb`` files with their digests
is. ``update`` asks the mirror (through mmdebstrap, which verifies the signed Release files) for
the dependency closure of a few root packages, minus packages the enclave never runs, and writes
it here. ``check`` fails, naming the package, when the mirror no longer serves what the lock says
(a security update, or a version dropped from the mirror): the signal to update and review.

The lock is TOML so a reviewer reads a security update as a one-line diff.

Usage: ``python -m nitro_llm.image.lock update|check [PATH]``.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import tomllib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitro_llm.image.deb_index import IndexEntry, Source, read_lists
from nitro_llm.image.digest import file_sha256
from nitro_llm.image.errors import ImageError, InputMismatchError, LockFileError, ToolError
from nitro_llm.image.progress import Progress

LOCK_FORMAT = 1
DEFAULT_LOCK_PATH = Path(__file__).resolve().parents[2] / "deploy" / "image" / "debian.lock"

DEFAULT_SOURCES = (
    "deb http://deb.debian.org/debian bookworm main",
    "deb http://deb.debian.org/debian bookworm-updates main",
    "deb http://deb.debian.org/debian-security bookworm-security main",
)

# What the enclave runs: Debian's Python (the interpreter, and the stdlib for ssl, ctypes, json,
# hashlib), the C++ and OpenMP runtimes llama.cpp links against, and the CA bundle for KMS's TLS.
DEFAULT_ROOTS = ("python3.11-minimal", "libpython3.11-stdlib", "libstdc++6", "libgomp1", "ca-certificates")

# Dependencies left out on purpose. Nothing runs maintainer scripts in the image (it has no shell),
# so the tools they need go; so do the libraries of stdlib modules the enclave never imports.
# The image smoke test imports everything the enclave does, inside the image, without them.
DEFAULT_EXCLUDED: Mapping[str, str] = {
    "debconf": "configures packages at install time; no maintainer script runs in the image",
    "openssl": "the command-line tool; Python's ssl module uses libssl3",
    "dpkg": "no package manager in the image",
    "tar": "needed by dpkg only",
    "libacl1": "needed by tar only",
    "libselinux1": "needed by tar only",
    "libpcre2-8-0": "needed by libselinux1 only",
    "libmd0": "needed by dpkg only",
    "libzstd1": "needed by dpkg only",
    "libbz2-1.0": "bz2 module, not used",
    "liblzma5": "lzma module, not used",
    "libdb5.3": "dbm.ndbm module, not used",
    "libreadline8": "interactive line editing; the enclave has no console",
    "readline-common": "needed by libreadline8 only",
    "libncursesw6": "curses module, not used",
    "libtinfo6": "needed by curses and readline only",
    "libnsl2": "nis module, not used",
    "libtirpc3": "needed by libnsl2 only",
    "libtirpc-common": "needed by libtirpc3 only",
    "libgssapi-krb5-2": "needed by libtirpc3 only",
    "libkrb5-3": "needed by libtirpc3 only",
    "libk5crypto3": "needed by libtirpc3 only",
    "libkrb5support0": "needed by libtirpc3 only",
    "libcom-err2": "needed by libtirpc3 only",
    "libkeyutils1": "needed by libtirpc3 only",
    "libuuid1": "_uuid speed-up; the uuid module works without it",
    "media-types": "/etc/mime.types for the mimetypes module, not used",
}


@dataclass(frozen=True)
class DebPackage:
    name: str
    version: str
    architecture: str
    sha256: str
    size: int
    url: str

    @property
    def label(self) -> str:
        return f"{self.name}={self.version}"

    @classmethod
    def from_index(cls, entry: IndexEntry) -> DebPackage:
        return cls(entry.name, entry.version, entry.architecture, entry.sha256, entry.size, entry.url)


@dataclass(frozen=True)
class LockSpec:
    """What ``update`` resolves: sources, root packages, and the dependencies left out."""

    sources: tuple[str, ...] = DEFAULT_SOURCES
    roots: tuple[str, ...] = DEFAULT_ROOTS
    excluded: Mapping[str, str] = field(default_factory=lambda: dict(DEFAULT_EXCLUDED))
    architecture: str = "amd64"


@dataclass(frozen=True)
class DebianLock:
    spec: LockSpec
    packages: tuple[DebPackage, ...]

    def by_name(self) -> dict[str, DebPackage]:
        return {p.name: p for p in self.packages}


# ---------------------------------------------------------------------------------------------
# reading and writing


def _toml_str(value: str) -> str:
    if any(c in value for c in '"\\\n') or not value.isprintable():
        raise LockFileError(f"value {value!r} cannot be written to the lock")
    return f'"{value}"'


def _toml_list(values: Iterable[str]) -> str:
    return "[" + ", ".join(_toml_str(v) for v in values) + "]"


def dumps(lock: DebianLock) -> str:
    spec = lock.spec
    lines = [
        "# Debian packages of the enclave root filesystem, at exact versions with their SHA-256.",
        "# Generated by 'python -m nitro_llm.image.lock update'; edit nitro_llm/image/lock.py, not this.",
        "# A build refuses any .deb whose digest differs from the one written here.",
        "",
        "[lock]",
        f"format = {LOCK_FORMAT}",
        f"architecture = {_toml_str(spec.architecture)}",
        "sources = [",
        *(f"  {_toml_str(s)}," for s in spec.sources),
        "]",
        f"roots = {_toml_list(spec.roots)}",
        "",
        "[lock.excluded]",
        *(f"{_toml_str(name)} = {_toml_str(why)}" for name, why in sorted(spec.excluded.items())),
    ]
    for p in sorted(lock.packages, key=lambda p: p.name):
        lines += [
            "",
            "[[package]]",
            f"name = {_toml_str(p.name)}",
            f"version = {_toml_str(p.version)}",
            f"architecture = {_toml_str(p.architecture)}",
            f"sha256 = {_toml_str(p.sha256)}",
            f"size = {p.size}",
            f"url = {_toml_str(p.url)}",
        ]
    return "\n".join(lines) + "\n"


def loads(text: str, *, origin: str = "lock") -> DebianLock:
    try:
        data = tomllib.loads(text)
        head = data["lock"]
        if head["format"] != LOCK_FORMAT:
            raise LockFileError(f"{origin}: format {head['format']} is not {LOCK_FORMAT}")
        spec = LockSpec(
            sources=tuple(head["sources"]),
            roots=tuple(head["roots"]),
            excluded=dict(head.get("excluded", {})),
            architecture=head["architecture"],
        )
        packages = tuple(_package(p) for p in data.get("package", []))
    except (tomllib.TOMLDecodeError, KeyError, TypeError, ValueError) as exc:
        raise LockFileError(f"{origin} is not a valid Debian lock ({type(exc).__name__}: {exc})") from None
    names = [p.name for p in packages]
    if len(set(names)) != len(names):
        raise LockFileError(f"{origin} lists a package twice")
    return DebianLock(spec=spec, packages=packages)


def _package(raw: Mapping[str, Any]) -> DebPackage:
    sha256 = str(raw["sha256"]).lower()
    if len(sha256) != 64 or any(c not in "0123456789abcdef" for c in sha256):
        raise ValueError(f"package {raw.get('name')}: sha256 is not 64 hex digits")
    return DebPackage(
        name=str(raw["name"]),
        version=str(raw["version"]),
        architecture=str(raw["architecture"]),
        sha256=sha256,
        size=int(raw["size"]),
        url=str(raw["url"]),
    )


def read_lock(path: Path = DEFAULT_LOCK_PATH) -> DebianLock:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockFileError(f"cannot read the Debian lock {path} ({exc.strerror})") from None
    return loads(text, origin=str(path))


def write_lock(lock: DebianLock, path: Path = DEFAULT_LOCK_PATH) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(dumps(lock), encoding="utf-8")


# ---------------------------------------------------------------------------------------------
# resolving against the mirror


@dataclass(frozen=True)
class Resolution:
    """What the mirror serves now for ``spec``: the closure and, per package, the downloaded file."""

    packages: tuple[DebPackage, ...]
    files: Mapping[str, Path]


def resolve(spec: LockSpec, workdir: Path, progress: Progress | None = None) -> Resolution:
    """Let mmdebstrap (apt) resolve and download the closure of ``spec.roots``.

    mmdebstrap's ``extract`` variant runs apt in a private configuration against only the given
    sources, checks the Release signatures with the host's Debian keyring, downloads the closure
    and unpacks it; nothing of the host's apt state is read or changed. The package lists and the
    downloaded files are kept, so each file's index entry (URL, digest) is found by its SHA-256.
    """
    progress = progress or Progress()
    if shutil.which("mmdebstrap") is None:
        raise ToolError(
            "mmdebstrap is not installed",
            hint="install it: apt-get install mmdebstrap (needed only to update or check the lock)",
        )
    target = workdir / "resolve"
    sources = [Source.parse(s) for s in spec.sources]
    command = [
        "mmdebstrap",
        "--quiet",
        "--variant=extract",
        f"--architectures={spec.architecture}",
        "--include=" + ",".join(spec.roots),
        "--skip=cleanup/apt",
        "--skip=cleanup/mmdebstrap",
        sources[0].suite,
        str(target),
        *spec.sources,
    ]
    progress.step(f"resolving {', '.join(spec.roots)} against {len(sources)} sources (mmdebstrap)")
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolError(
            f"mmdebstrap failed (exit {done.returncode}): {done.stderr.strip()[-600:]}",
            hint="check the mirror is reachable and the root package names exist in the suite",
        )
    by_digest = {e.sha256: e for e in read_lists(target / "var/lib/apt/lists", sources)}
    packages: list[DebPackage] = []
    files: dict[str, Path] = {}
    for deb in sorted((target / "var/cache/apt/archives").glob("*.deb")):
        entry = by_digest.get(file_sha256(deb))
        if entry is None:
            raise InputMismatchError(deb.name, "downloaded, but no index of the sources lists its digest")
        if entry.name in spec.excluded:
            continue
        packages.append(DebPackage.from_index(entry))
        files[entry.name] = deb
    return Resolution(packages=tuple(sorted(packages, key=lambda p: p.name)), files=files)


def update_lock(
    path: Path = DEFAULT_LOCK_PATH, spec: LockSpec | None = None, progress: Progress | None = None
) -> DebianLock:
    """Regenerate the lock from what the mirror serves now."""
    spec = spec or LockSpec()
    with tempfile.TemporaryDirectory(prefix="nitro-llm-lock-") as tmp:
        resolution = resolve(spec, Path(tmp), progress)
    lock = DebianLock(spec=spec, packages=resolution.packages)
    write_lock(lock, path)
    return lock


def differences(locked: DebianLock, served: Iterable[DebPackage]) -> list[str]:
    """One line per package whose version or digest differs, or that appeared or vanished."""
    old = locked.by_name()
    new = {p.name: p for p in served}
    lines = []
    for name in sorted(old.keys() | new.keys()):
        a, b = old.get(name), new.get(name)
        if a is None and b is not None:
            lines.append(f"{name}: not in the lock, the mirror now resolves {b.version}")
        elif b is None and a is not None:
            lines.append(f"{name}: locked at {a.version}, no longer part of the resolved set")
        elif a is not None and b is not None and a.version != b.version:
            lines.append(f"{name}: locked at {a.version}, the mirror serves {b.version}")
        elif a is not None and b is not None and a.sha256 != b.sha256:
            lines.append(
                f"{name}: {a.version} has SHA-256 {b.sha256} on the mirror, the lock says {a.sha256}"
            )
    return lines


def check_lock(path: Path = DEFAULT_LOCK_PATH, progress: Progress | None = None) -> DebianLock:
    """Fail, naming each package, if the mirror's resolution of the lock's spec differs from it."""
    lock = read_lock(path)
    with tempfile.TemporaryDirectory(prefix="nitro-llm-lock-") as tmp:
        resolution = resolve(lock.spec, Path(tmp), progress)
    diff = differences(lock, resolution.packages)
    if diff:
        first = diff[0].split(":", 1)[0]
        raise InputMismatchError(
            first if len(diff) == 1 else f"{first} and {len(diff) - 1} more",
            "the mirror differs from the Debian lock:\n  " + "\n  ".join(diff),
            hint="run 'python -m nitro_llm.image.lock update', review the diff (usually a security "
            "update), rebuild the image and pin its new PCRs in the key policy",
        )
    return lock


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0] not in ("update", "check"):
        print("usage: python -m nitro_llm.image.lock update|check [LOCK]", file=sys.stderr)
        return 2
    path = Path(args[1]) if len(args) > 1 else DEFAULT_LOCK_PATH
    try:
        lock = update_lock(path) if args[0] == "update" else check_lock(path)
    except ImageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"{path}: {len(lock.packages)} packages {'written' if args[0] == 'update' else 'match the mirror'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
