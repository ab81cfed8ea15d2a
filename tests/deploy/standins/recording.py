"""Every stand-in appends one JSON line per call to $STANDIN_LOG: which tool, its argv, as which
user, from which working directory. Tests read the calls back in order."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


def record(tool: str, argv: list[str], **extra: Any) -> None:
    log = os.environ.get("STANDIN_LOG")
    if not log:
        return
    entry = {"tool": tool, "argv": argv, "uid": os.getuid(), "cwd": os.getcwd(), **extra}
    with open(log, "a") as out:
        out.write(json.dumps(entry) + "\n")


def calls(log: Path, tool: str | None = None) -> list[dict[str, Any]]:
    if not log.exists():
        return []
    entries = [json.loads(line) for line in log.read_text().splitlines() if line]
    return [e for e in entries if tool is None or e["tool"] == tool]
