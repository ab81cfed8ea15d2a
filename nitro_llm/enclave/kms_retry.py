"""Retrying KMS when it cannot be reached, within bounds, before telling the client to retry.

The enclave reaches KMS through two relays (its own forwarder, the parent's vsock-proxy); a KMS or
relay restart, or a network blip, looks like a refused or reset connection for a moment. A few
attempts spaced out with jittered exponential backoff ride that out; an outage that lasts longer
must not hold the client's request (and its connection slot) for long, so the attempts and the
total time are both capped, and what remains is a typed, retryable ``kms_unavailable``.
A refusal (the policy says no, the blob is bad) is never retried: asking again cannot change it.

This is the only layer that retries: the enclave's client is built with ``single_attempt`` (botocore
makes one HTTP attempt per call), and each attempt runs under a read timeout cut from what is left of
the deadline, after reserving the client's connect timeout. An attempt starts only if it can end
before the deadline, so the deadline bounds the whole call, waits for a silent KMS or relay included.
(Socket timeouts bound each read, not a peer that trickles bytes just inside them.)
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from nitro_llm.enclave.errors import KmsUnavailableError
from nitro_llm.kms import attempt_budget

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 2.0
    deadline: float = 8.0
    """Seconds from the first attempt within which every attempt, its timeouts included, has ended."""
    connect_timeout: float = attempt_budget.ATTEMPT_CONNECT_TIMEOUT_S
    """The single-attempt client's connect timeout, reserved from the budget of every attempt."""
    max_read_timeout: float = 4.0
    """Read timeout of one attempt at most: a connection stuck behind a restarted relay leaves time
    for another attempt on a fresh one."""
    min_read_timeout: float = 0.5
    """No attempt starts with less read time than this left before the deadline."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.connect_timeout < 0:
            raise ValueError("attempts >= 1 and non-negative delays and connect timeout are required")
        if not 0 < self.min_read_timeout <= self.max_read_timeout:
            raise ValueError("0 < min_read_timeout <= max_read_timeout is required")
        if self.deadline < self.connect_timeout + self.min_read_timeout:
            raise ValueError("the deadline must leave room for one attempt (connect + min read timeout)")

    def read_timeout(self, elapsed: float) -> float:
        """The read timeout of an attempt starting ``elapsed`` seconds after the first one."""
        return min(self.max_read_timeout, self.deadline - elapsed - self.connect_timeout)

    def delay(self, attempt: int, rng: random.Random) -> float:
        """Full jitter: uniformly up to the capped exponential step (spreads a herd of retries)."""
        return rng.uniform(0, min(self.max_delay, self.base_delay * 2 ** (attempt - 1)))


def with_retries(
    call: Callable[[], T],
    policy: RetryPolicy,
    *,
    request_id: str,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
    rng: random.Random | None = None,
) -> T:
    """Run ``call``; on ``KmsUnavailableError`` try again while attempts and time remain.

    Each attempt's KMS calls wait at most ``policy.read_timeout(elapsed)`` per read (through
    ``attempt_budget``); the next attempt starts only if, after its pause, the connect timeout and the
    minimum read timeout still fit before the deadline.
    """
    rng = rng or random.Random()  # jitter, not a secret
    started = clock()
    last: KmsUnavailableError | None = None
    for attempt in range(1, policy.attempts + 1):
        with attempt_budget.read_timeout(policy.read_timeout(clock() - started)):
            try:
                return call()
            except KmsUnavailableError as exc:
                last = exc
        pause = policy.delay(attempt, rng)
        next_start = clock() - started + pause
        if attempt == policy.attempts or policy.read_timeout(next_start) < policy.min_read_timeout:
            break
        log.info("request=%s kms_retry attempt=%d pause_ms=%d", request_id, attempt, int(pause * 1000))
        sleep(pause)
    assert last is not None
    raise KmsUnavailableError(
        f"{last.message} (gave up after {attempt} attempts in {clock() - started:.1f} s)",
        hint="KMS or the relay to it is unreachable; retry the request in a few seconds",
    )
