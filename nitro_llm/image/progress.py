"""Progress lines on stderr for the slow steps of an image build.

A cold build downloads packages and hashes a model for a minute or more; a line per step (with how
long the previous step took) tells the operator it is moving and where the time goes. stdout stays
free for results that scripts read.
"""

from __future__ import annotations

import sys
import time


class Progress:
    def __init__(self, prefix: str = "image", *, quiet: bool = False) -> None:
        self.prefix = prefix
        self.quiet = quiet
        self._start = time.monotonic()

    def step(self, message: str) -> None:
        if not self.quiet:
            elapsed = time.monotonic() - self._start
            print(f"[{self.prefix} {elapsed:6.1f}s] {message}", file=sys.stderr, flush=True)
