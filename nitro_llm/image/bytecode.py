"""Compile the image's Python to bytecode at build time, deterministically, with the image's own
interpreter.

Debian's packages ship no ``.pyc`` (a maintainer script compiles them, and none runs here), and a
read-only root cannot cache any at run time: without this step every start would compile the
stdlib, the dependencies and our code in memory. ``unchecked-hash`` pyc files hold a hash of their
source instead of its mtime and are used without re-checking it, and ``PYTHONHASHSEED=0`` fixes
the order of set constants, so the bytes depend only on the sources. One process compiles
everything, in a fixed order (marshal's output can depend on what else the process holds).

The interpreter is the image's: ``.pyc`` files are only valid for the exact interpreter that
loads them. It runs through the image's own dynamic loader and libraries, so no chroot (and no
root) is needed; paths recorded in the code objects are those of the running enclave.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from nitro_llm.image.errors import ToolError
from nitro_llm.image.layout import PYTHON
from nitro_llm.image.progress import Progress

LOADER = "lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"
LIBRARY_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")


def image_python(root: Path) -> list[str]:
    """A command line running the image's Python on the host, without entering the image."""
    library_path = ":".join(str(root / d) for d in LIBRARY_DIRS)
    return [
        str(root / LOADER),
        "--inhibit-cache",
        "--library-path",
        library_path,
        str(root / PYTHON.lstrip("/")),
    ]


def compile_tree(root: Path, directories: list[str], progress: Progress | None = None) -> None:
    (progress or Progress()).step(f"compiling bytecode in {', '.join('/' + d for d in directories)}")
    command = [
        *image_python(root),
        "-s",
        "-m",
        "compileall",
        "-q",
        "-f",
        "-j",
        "1",
        "--invalidation-mode",
        "unchecked-hash",
        "-s",
        str(root),
        "-p",
        "/",
        *(str(root / d) for d in directories),
    ]
    # The compiler's own imports must not leave timestamp-based .pyc files behind.
    env = {"PYTHONHASHSEED": "0", "PYTHONDONTWRITEBYTECODE": "1", "LC_ALL": "C.UTF-8"}
    done = subprocess.run(command, capture_output=True, text=True, env=env, check=False)
    if done.returncode != 0:
        raise ToolError(
            f"compiling the image's Python failed: {(done.stdout + done.stderr).strip()[-800:]}",
            hint="a source file in the image does not compile with Debian's python3.11; see the file named",
        )
