"""The enclave's "now" for freshness checks: the NSM's clock, carried forward by the monotonic clock.

Why not the enclave's own wall clock: nothing keeps it in time. An enclave has no network and no
NTP; its kernel clock is set at boot and then runs on its own, and on Nitro it has been seen to drift
by seconds a week. Left alone for a few months it would put every honest client outside the 120 s
freshness window. Syncing it from the parent would hand the parent the clock that decides whether a
captured request is still fresh.

The NSM's attestation documents carry a timestamp from the Nitro hypervisor, which the parent cannot
set and AWS keeps in time: KMS itself refuses attestation documents more than five minutes old by
that timestamp, so it agrees with AWS's clock. So the enclave asks its NSM for a document at start
and every ``REANCHOR_SECONDS``, and between two anchors adds the monotonic clock's elapsed time.
Drift then only accumulates between anchors: even at 200 ppm (twenty times the seconds a week
reported) that is 0.12 s per 10 minutes, against a 120 s window. Requests from clients whose clocks
are off by less than the window pass, as before; the tolerance no longer shrinks with uptime. If a
re-anchor fails the previous anchor is carried forward and logged, and it is tried again an interval
later (a day without anchors at 200 ppm is 17 s).

The other two ways considered: a window widened by a drift bound grows with uptime without limit,
and the replay window (and memory) with it; a client stamping from a time the enclave gave it needs
a round trip to the enclave that the kms protocol does not have, and that time would reach the
client through the parent.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Protocol

from nitro_llm.attestation import parse_document
from nitro_llm.errors import NitroLLMError

log = logging.getLogger(__name__)

REANCHOR_SECONDS = 600.0


class TimestampSource(Protocol):
    """The NSM seam (``Nsm``): its attestation documents carry the hypervisor's time."""

    def attest(
        self, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes: ...


class TrustedClock:
    """Milliseconds since the epoch by the NSM's clock (``now_ms``), cheap to read on every request."""

    def __init__(
        self,
        nsm: TimestampSource,
        *,
        reanchor_seconds: float = REANCHOR_SECONDS,
        monotonic: Callable[[], float] = time.monotonic,
        wall_ms: Callable[[], int] = lambda: time.time_ns() // 1_000_000,
    ) -> None:
        if reanchor_seconds <= 0:
            raise ValueError("reanchor_seconds must be positive")
        self._nsm = nsm
        self._interval = reanchor_seconds
        self._monotonic = monotonic
        self._wall_ms = wall_ms  # only to report how far the enclave's own clock has drifted
        self._lock = threading.Lock()
        # At start an NSM that cannot attest is fatal: the enclave could not release a key either.
        self._anchor_ms, self._anchor_mono = self._read_nsm()
        self._next_anchor = self._anchor_mono + self._interval
        self.anchors = 1

    def now_ms(self) -> int:
        with self._lock:
            now = self._monotonic()
            if now >= self._next_anchor:
                self._reanchor(now)
            return self._anchor_ms + int((self._monotonic() - self._anchor_mono) * 1000)

    def _reanchor(self, now: float) -> None:
        self._next_anchor = now + self._interval
        try:
            self._anchor_ms, self._anchor_mono = self._read_nsm()
        except NitroLLMError as exc:
            log.warning("clock re-anchor failed (%s): carrying the last NSM time forward", exc.code)
            return
        self.anchors += 1

    def _read_nsm(self) -> tuple[int, float]:
        """The NSM's time and the monotonic instant it stands for (the middle of the call)."""
        before = self._monotonic()
        document = self._nsm.attest()
        after = self._monotonic()
        stamp = parse_document(document).timestamp
        log.info(
            "clock anchored to the NSM; the enclave's own clock is off by %+.1f s",
            (self._wall_ms() - stamp) / 1000,
        )
        return stamp, (before + after) / 2
