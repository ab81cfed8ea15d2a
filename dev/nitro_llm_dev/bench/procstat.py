"""Resident memory of the stack's processes, sampled while it is under attack.

"Memory bounded" is checked two ways: an absolute ceiling per process, and growth between the first
and the second half of a run, which is what a leak (a cache that never evicts, a buffer per hostile
connection that is never freed) looks like under steady load.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field


def rss_bytes(pid: int) -> int | None:
    """VmRSS of ``pid``; None if it is gone."""
    try:
        with open(f"/proc/{pid}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        return None
    return None


@dataclass
class Series:
    samples: list[tuple[float, int]] = field(default_factory=list)

    @property
    def peak(self) -> int:
        return max((rss for _, rss in self.samples), default=0)

    def growth(self) -> int:
        """Peak of the second half minus peak of the first half (negative: it shrank)."""
        if len(self.samples) < 4:
            return 0
        half = len(self.samples) // 2
        first = max(rss for _, rss in self.samples[:half])
        second = max(rss for _, rss in self.samples[half:])
        return second - first


class RssSampler:
    """Samples each named process every ``interval`` seconds from a background thread. Pids are
    looked up on each sample, so a restarted process is followed under its new pid."""

    def __init__(self, pids: Mapping[str, Callable[[], int | None]], *, interval: float = 0.5) -> None:
        self._pids = pids
        self._interval = interval
        self.series: dict[str, Series] = {name: Series() for name in pids}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def sample(self) -> None:
        now = time.monotonic()
        for name, get_pid in self._pids.items():
            pid = get_pid()
            rss = rss_bytes(pid) if pid else None
            if rss is not None:
                self.series[name].samples.append((now, rss))

    def __enter__(self) -> RssSampler:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="rss-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self.sample()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval):
            self.sample()
