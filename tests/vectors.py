"""Locate the real AWS test vectors shipped beside the repo (../shared/test-vectors).

CI clones the repo into a fresh folder with a copy of shared/ beside it, so the path is relative to
the repo root; NITRO_LLM_TEST_VECTORS overrides it.
"""

from __future__ import annotations

import os
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def vectors_dir() -> Path:
    override = os.environ.get("NITRO_LLM_TEST_VECTORS")
    path = Path(override) if override else REPO_ROOT.parent / "shared" / "test-vectors"
    if not path.is_dir():
        raise FileNotFoundError(
            f"test vectors not found at {path}; set NITRO_LLM_TEST_VECTORS to the shared/test-vectors folder"
        )
    return path


def vector(relpath: str) -> bytes:
    return (vectors_dir() / relpath).read_bytes()
