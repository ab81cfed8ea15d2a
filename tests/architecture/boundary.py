"""The trust boundary's import rules, read from pyproject.toml's import-linter contracts.

One definition serves both checks: ``lint-imports`` (static, transitive) and the live-process check
(``sys.modules`` of each party's running process), so the two can never disagree about what a party
may hold.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def contracts() -> list[dict]:
    data = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    return data["tool"]["importlinter"]["contracts"]


def forbidden_for(source: str) -> list[str]:
    """The modules the contract whose sources include ``source`` forbids."""
    for contract in contracts():
        if source in contract.get("source_modules", []):
            return list(contract["forbidden_modules"])
    raise LookupError(f"no contract has {source} as a source")


def violations(loaded: list[str], forbidden: list[str]) -> list[str]:
    """Loaded modules that are, or are inside, a forbidden module."""
    return sorted(m for m in loaded if any(m == f or m.startswith(f + ".") for f in forbidden))
