"""Look for plaintext where it must never be: a process's memory, its logs, files it wrote.

Canary strings (random, so nothing else could contain them) are sent inside sealed questions; the
gateway must never hold them in any form. A scan searches every readable private mapping of the
process (not the shared libraries, which cannot hold request data) and the given files, for each
canary in UTF-8, UTF-16-LE and as a 20-character prefix (a string cut at a buffer boundary). A scan
that could not see anything proves nothing, so callers pass a ``witness``: a string the process is
known to hold, which the scan must find.
"""

from __future__ import annotations

import os
import secrets
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

MAX_MAPPING = 512 * 1024 * 1024
MAX_FILE = 64 * 1024 * 1024
PREFIX_CHARS = 20


def new_canary(tag: str = "PHI") -> str:
    return f"CANARY-{tag}-{secrets.token_hex(8)}-Jane-Roe"


def forms(canary: str) -> list[bytes]:
    """The byte patterns a canary could leave behind."""
    return [canary.encode(), canary.encode("utf-16-le"), canary[:PREFIX_CHARS].encode()]


class _Matcher:
    """Finds any of many canaries in one pass: they share a marker (``CANARY-``), which is searched
    for at memchr speed; only where it occurs are the canaries compared (a slow multi-pattern scan
    of hundreds of megabytes would take minutes)."""

    def __init__(self, canaries: list[str]) -> None:
        self.patterns = [p for c in canaries for p in forms(c)]
        # At most the shortest form's length: the marker must begin every form, the prefix one too.
        marker = os.path.commonprefix(canaries)[:PREFIX_CHARS] if canaries else ""  # noqa: RUF071
        self.markers = [marker.encode(), marker.encode("utf-16-le")] if len(marker) >= 6 else []

    def found_in(self, data: bytes) -> bool:
        if not self.markers:
            return any(p in data for p in self.patterns)
        for marker in self.markers:
            pos = data.find(marker)
            while pos != -1:
                if any(data.startswith(p, pos) for p in self.patterns):
                    return True
                pos = data.find(marker, pos + 1)
        return False


def read_process_memory(pid: int) -> Iterator[bytes]:
    """Each readable, private or anonymous mapping of ``pid`` (root, or our own child)."""
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            fields = line.split()
            if "r" not in fields[1] or (len(fields) > 5 and fields[5].startswith(("/usr", "/lib"))):
                continue
            start, end = (int(x, 16) for x in fields[0].split("-"))
            if end - start > MAX_MAPPING:
                continue
            try:
                mem.seek(start)
                yield mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue


def files_written_since(roots: Iterable[Path], since: float) -> list[Path]:
    """Regular files under ``roots`` modified at or after ``since`` (a time.time() value)."""
    found = []
    for root in roots:
        if not root.exists():
            continue
        for dirpath, _dirs, names in os.walk(root, onerror=lambda _e: None):
            for name in names:
                path = Path(dirpath) / name
                try:
                    st = path.lstat()
                except OSError:
                    continue
                if path.is_file() and not path.is_symlink() and st.st_mtime >= since and st.st_size:
                    found.append(path)
    return found


def open_files(pid: int) -> list[Path]:
    """Regular files ``pid`` holds open now (its logs, any temporary file it kept)."""
    found = []
    try:
        fds = os.listdir(f"/proc/{pid}/fd")
    except OSError:
        return []
    for fd in fds:
        try:
            target = Path(os.readlink(f"/proc/{pid}/fd/{fd}"))
        except OSError:
            continue
        if target.is_absolute() and target.is_file():
            found.append(target)
    return found


@dataclass
class LeakReport:
    canaries: int = 0
    memory_bytes_scanned: int = 0
    files_scanned: int = 0
    witness_found: bool = False
    hits: list[str] = field(default_factory=list)
    """Where a canary was found: "memory" or a file path. Never the canary itself."""
    seconds: float = 0.0

    @property
    def leaks(self) -> int:
        return len(self.hits)


def scan(
    canaries: Iterable[str],
    *,
    pid: int | None = None,
    files: Iterable[Path] = (),
    witness: bytes | None = None,
) -> LeakReport:
    started = time.monotonic()
    matcher = _Matcher(list(canaries))
    report = LeakReport(canaries=len(matcher.patterns) // 3)
    if pid is not None:
        for chunk in read_process_memory(pid):
            report.memory_bytes_scanned += len(chunk)
            if witness is not None and witness in chunk:
                report.witness_found = True
            if matcher.found_in(chunk):
                report.hits.append(f"memory of pid {pid}")
                break
    for path in files:
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_FILE)
        except OSError:
            continue
        report.files_scanned += 1
        if matcher.found_in(data):
            report.hits.append(str(path))
    report.seconds = time.monotonic() - started
    return report
