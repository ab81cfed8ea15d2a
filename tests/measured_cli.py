"""Runs ``nitro-llm ARGS`` in this process and, at exit, writes this process's own peak resident
memory (``VmHWM`` in KiB) to REPORT: ``python measured_cli.py REPORT ARGS...``.

Why not ``wait4``'s ``ru_maxrss``: Linux folds the RSS a child had before ``exec`` (a fork of the
test process, hundreds of MB late in the suite) into it, so it measures pytest, not the command.
``VmHWM`` belongs to the address space that ``exec`` created, which is the command's alone.
"""

import atexit
import sys
from pathlib import Path

REPORT = Path(sys.argv[1])
sys.argv = ["nitro-llm", *sys.argv[2:]]


def _report() -> None:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            REPORT.write_text(line.split()[1])


atexit.register(_report)

from nitro_llm.cli.main import main  # noqa: E402  (the report must be registered first)

main()
