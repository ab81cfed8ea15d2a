"""python3.11 and pip, standing in for installing nitro-llm on the instance: ``-m venv DIR`` makes a
virtualenv with a pip; ``pip install SRC`` checks SRC is the nitro-llm project and installs its
``nitro-llm`` console script, which runs the code of SRC (the instance's checkout) with this test's
interpreter and dependencies (installing them from PyPI here would only test pip)."""

from __future__ import annotations

import sys
import tomllib
from pathlib import Path

from standins.recording import record


def main(argv: list[str]) -> int:
    record("python3.11", argv)
    if argv[:2] != ["-m", "venv"] or len(argv) != 3:
        print(f"stand-in python3.11: only '-m venv DIR', not {argv}", file=sys.stderr)
        return 2
    venv = Path(argv[2])
    (venv / "bin").mkdir(parents=True, exist_ok=True)
    pip = venv / "bin" / "pip"
    pip.write_text(
        f"#!{sys.executable}\nimport sys\nsys.path[:0] = {sys.path[:3]!r}\n"
        "from standins.python311 import pip_main\nsys.exit(pip_main(sys.argv[1:]))\n"
    )
    pip.chmod(0o755)
    return 0


def pip_main(argv: list[str]) -> int:
    record("pip", argv)
    args = [a for a in argv if a != "-q"]
    if args[:1] != ["install"] or len(args) != 2:
        print(f"stand-in pip: only 'install SRC', not {argv}", file=sys.stderr)
        return 1
    src = Path(args[1])
    project = tomllib.loads((src / "pyproject.toml").read_text())["project"]
    if project["name"] != "nitro-llm":
        print(f"stand-in pip: {src} is not nitro-llm", file=sys.stderr)
        return 1
    module, func = project["scripts"]["nitro-llm"].split(":")
    script = Path(sys.argv[0]).parent / "nitro-llm"
    script.write_text(
        f"#!/bin/sh\nPYTHONPATH={src} exec {sys.executable} -c "
        f'\'import sys; sys.argv[0] = "nitro-llm"; from {module} import {func}; {func}()\' "$@"\n'
    )
    script.chmod(0o755)
    return 0
