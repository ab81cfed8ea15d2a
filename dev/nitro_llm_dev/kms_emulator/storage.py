"""Durable, private JSON files for the emulator's state.

Key material lives in these files, so each is written atomically (a private temporary file in the
same directory, fsync, rename, fsync of the directory) with mode 0600: a crash leaves the old or
the new state, never half of one, and no other user can read either.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from pathlib import Path
from typing import IO, Any

from nitro_llm.kms.errors import EmulatorStateError


def write_json_atomic(path: Path, data: Any) -> None:
    payload = json.dumps(data, indent=2, sort_keys=True).encode("utf-8") + b"\n"
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o600)  # O_CREAT's mode does not apply if a stale temporary file existed
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            tmp.unlink()
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def read_json(path: Path) -> Any | None:
    """The file's JSON, or ``None`` if it does not exist yet."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise EmulatorStateError(
            f"cannot read {path.name} in the state directory ({type(exc).__name__})",
            hint="check the permissions of --state-dir",
        ) from None
    try:
        return json.loads(text)
    except ValueError:
        raise EmulatorStateError(
            f"{path.name} in the state directory is not valid JSON",
            hint="restore it from a backup, or move the state directory away to start afresh",
        ) from None


def prepare_state_dir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    os.chmod(path, 0o700)
    return path


class StateLock:
    """An exclusive lock on the state directory: two emulators writing one state would lose keys."""

    def __init__(self, state_dir: Path) -> None:
        self._path = state_dir / ".lock"
        self._handle: IO[str] | None = None

    def acquire(self) -> None:
        handle = os.fdopen(os.open(self._path, os.O_RDWR | os.O_CREAT, 0o600), "r+")
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.close()
            raise EmulatorStateError(f"another KMS emulator is using {self._path.parent}") from None
        self._handle = handle

    def release(self) -> None:
        if self._handle is not None:
            fcntl.flock(self._handle.fileno(), fcntl.LOCK_UN)
            self._handle.close()
            self._handle = None
