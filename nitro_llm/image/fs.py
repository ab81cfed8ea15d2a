"""Creating files in the staged root with explicit modes.

``mkdir`` and ``open`` take their permissions from the builder's umask, which differs between
machines; every directory and file the build creates gets its mode here instead, so the image does
not depend on who built it.
"""

from __future__ import annotations

import os
from pathlib import Path

DIR_MODE = 0o755
FILE_MODE = 0o644


def ensure_dir(path: Path, mode: int = DIR_MODE) -> None:
    """Create ``path`` and any missing parent, each with ``mode``; existing ones are left alone."""
    missing = []
    current = path
    while not current.exists() and not current.is_symlink():
        missing.append(current)
        current = current.parent
    for directory in reversed(missing):
        directory.mkdir()
        os.chmod(directory, mode)


def write_file(path: Path, data: bytes, mode: int = FILE_MODE) -> None:
    ensure_dir(path.parent)
    path.write_bytes(data)
    os.chmod(path, mode)
