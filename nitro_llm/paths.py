"""Where nitro-llm keeps state that must survive restarts (dev CA, KMS emulator keys).

One place so that every process of the local stack agrees without passing paths around.
"""

from __future__ import annotations

import os
from pathlib import Path


def state_dir() -> Path:
    """``$NITRO_LLM_HOME`` or ``~/.local/share/nitro-llm``; created on first use, private to the user."""
    root = Path(os.environ.get("NITRO_LLM_HOME") or Path.home() / ".local" / "share" / "nitro-llm")
    root.mkdir(parents=True, exist_ok=True, mode=0o700)
    return root
