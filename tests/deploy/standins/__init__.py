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
    "dnf": "dnf",
    "git": "git",
    "cfn-signal": "cfn_signal",
    "curl": "curl",
    "nitro-llm-enclave-standin": "enclave",
}


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
    for name in names or list(PYTHON_STANDINS):
        path = bin_dir / name
        path.write_text(wrapper(PYTHON_STANDINS[name]))
        path.chmod(0o755)
    return bin_dir
