"""Freshness and replay: each sealed request is answered at most once.

A request's timestamp must be within a window of the enclave's clock, and its request id must not
have been seen while it could still pass that check. The enclave's clock here is ``clock_ms``: in the
running enclave the NSM's time carried forward by the monotonic clock (enclave/trusted_clock.py),
because the enclave's own wall clock drifts and nothing corrects it.

Because the replay memory is lost when the process restarts, requests stamped before this process
started are refused too: otherwise the parent, which can restart the enclave at will, could replay a
captured request and get a second answer sealed under the same response key and nonces.
"""

from __future__ import annotations

import heapq
import threading
import time
from collections.abc import Callable

from nitro_llm.enclave.errors import ReplayCacheFullError, ReplayedRequestError, StaleRequestError

DEFAULT_WINDOW_SECONDS = 120.0
DEFAULT_REPLAY_CAPACITY = 100_000


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class FreshnessGuard:
    def __init__(
        self,
        *,
        window_seconds: float = DEFAULT_WINDOW_SECONDS,
        capacity: int = DEFAULT_REPLAY_CAPACITY,
        clock_ms: Callable[[], int] = now_ms,
    ) -> None:
        if window_seconds <= 0 or capacity < 1:
            raise ValueError("window_seconds and capacity must be positive")
        self._window_ms = int(window_seconds * 1000)
        self._capacity = capacity
        self._clock_ms = clock_ms
        self._started_ms = clock_ms()
        self._lock = threading.Lock()
        self._seen: dict[str, int] = {}  # request id -> expiry (ms)
        self._expiries: list[tuple[int, str]] = []

    def check_fresh(self, request_id: str, timestamp_ms: int) -> None:
        """Cheap checks before any KMS call: in the window, after start-up, not seen before."""
        now = self._clock_ms()
        if abs(now - timestamp_ms) > self._window_ms:
            raise StaleRequestError(
                f"request {request_id} is {abs(now - timestamp_ms) // 1000} s away from the enclave's clock; "
                f"the window is {self._window_ms // 1000} s"
            )
        if timestamp_ms < self._started_ms:
            raise StaleRequestError(f"request {request_id} is stamped before this enclave started")
        with self._lock:
            if request_id in self._seen:
                raise ReplayedRequestError(f"request {request_id} was already answered")

    def claim(self, request_id: str, timestamp_ms: int) -> None:
        """Record the id once the request has authenticated (forgeries must not fill the cache).

        Atomic: of two connections racing with the same id, exactly one succeeds.
        """
        with self._lock:
            self._expire(self._clock_ms())
            if request_id in self._seen:
                raise ReplayedRequestError(f"request {request_id} was already answered")
            if len(self._seen) >= self._capacity:
                raise ReplayCacheFullError(f"{len(self._seen)} requests are inside the freshness window")
            expiry = timestamp_ms + self._window_ms  # after this the timestamp check refuses it anyway
            self._seen[request_id] = expiry
            heapq.heappush(self._expiries, (expiry, request_id))

    def __len__(self) -> int:
        with self._lock:
            self._expire(self._clock_ms())
            return len(self._seen)

    def _expire(self, now: int) -> None:
        while self._expiries and self._expiries[0][0] < now:
            _, request_id = heapq.heappop(self._expiries)
            del self._seen[request_id]
