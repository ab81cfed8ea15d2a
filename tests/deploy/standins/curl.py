"""curl, standing in for the one call the README makes from the laptop: the caller's public IP."""

from __future__ import annotations

import sys

from standins.recording import record


def main(argv: list[str]) -> int:
    record("curl", argv)
    if argv and argv[-1] == "https://checkip.amazonaws.com":
        print("203.0.113.7")
        return 0
    print(f"curl: (6) Could not resolve host (stand-in knows only checkip): {argv}", file=sys.stderr)
    return 6
