"""Recording stand-ins for the tools a parent instance and an operator's laptop call (nitro-cli,
aws, systemctl, dnf, git, sudo, ...) and for the enclave itself. Each records its argv and answers
like the real tool: the same output shapes, the same refusals. ``install`` puts them on a PATH."""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[2]

PYTHON_STANDINS = {
    "nitro-cli": "nitro_cli",
    "aws": "aws",
    "systemctl": "systemctl",
    "git": "git",
    "cfn-signal": "cfn_signal",
    "curl": "curl",
    "nitro-llm-enclave-standin": "enclave",
    "python3.11": "python311",
    "dnf": "dnf",
    "nitro-llm": "laptop_nitro_llm",
}

SUDO = """#!/bin/sh
# sudo, standing in: 'sudo -u USER CMD...' drops to USER for real (setpriv), with sudo's reset
# environment and secure_path, so a permission problem fails here as it would on the instance.
if [ "$1" != "-u" ]; then exec "$@"; fi
user=$2; shift 2
exec setpriv --reuid="$user" --regid="$user" --init-groups \\
  env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/ "$@"
"""


def wrapper(module: str, python: str = sys.executable) -> str:
    """An executable that runs ``standins.<module>.main`` with this interpreter, the code under test
    (the worktree, then the development package) first on the path."""
    paths = [str(REPO), str(REPO / "dev"), str(HERE.parent)]
    return (
        f"#!{python}\n"
        "import sys\n"
        f"sys.path[:0] = {paths!r}\n"
        f"from standins.{module} import main\n"
        "sys.exit(main(sys.argv[1:]))\n"
    )


def install(bin_dir: Path, names: list[str] | None = None) -> Path:
    bin_dir.mkdir(parents=True, exist_ok=True)
    for name in names or [*PYTHON_STANDINS, "sudo"]:
        path = bin_dir / name
        path.write_text(SUDO if name == "sudo" else wrapper(PYTHON_STANDINS[name]))
        path.chmod(0o755)
    return bin_dir
