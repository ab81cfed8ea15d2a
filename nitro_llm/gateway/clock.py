"""The gateway's one notion of time, a seam like the enclave link: ``create_app(clock=...)``.

Everything that measures elapsed time on the request path (rate buckets, the tokens file's reload
check, the enclave monitor's cache and outage timer, request latency) reads it, so a test moves
time forward by hand instead of sleeping. Timeouts on sockets stay on the event loop's own clock:
they guard real I/O.
"""

from __future__ import annotations

import time
from collections.abc import Callable

Clock = Callable[[], float]
"""Monotonic seconds."""

system_clock: Clock = time.monotonic
