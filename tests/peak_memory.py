"""Start the installed CLI so that its own peak memory can be read when it exits (see measured_cli)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

_MEASURED = Path(__file__).with_name("measured_cli.py")


class MeasuredCommand:
    """``nitro-llm ARGS`` as a child process; ``finish()`` waits and gives (exit code, peak KiB, stderr)."""

    def __init__(self, args: list[str], env: dict[str, str], report: Path) -> None:
        self.report = report
        report.unlink(missing_ok=True)
        self.proc = subprocess.Popen(
            [sys.executable, str(_MEASURED), str(report), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
        )

    def finish(self, timeout: float = 120) -> tuple[int, int, str]:
        _, stderr = self.proc.communicate(timeout=timeout)
        assert self.report.exists(), f"the command wrote no memory report: {stderr.decode()[-2000:]}"
        return self.proc.returncode, int(self.report.read_text()), stderr.decode()
