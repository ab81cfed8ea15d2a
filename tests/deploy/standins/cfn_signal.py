"""cfn-signal, standing in: records the exit code the bootstrap signals to CloudFormation."""

from __future__ import annotations

import os
from pathlib import Path

from standins.recording import record


def main(argv: list[str]) -> int:
    record("cfn-signal", argv)
    code = argv[argv.index("--exit-code") + 1]
    (Path(os.environ["STANDIN_STATE"]) / "cfn-signal").write_text(code)
    return 0
