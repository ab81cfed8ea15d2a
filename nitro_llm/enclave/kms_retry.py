"""Retrying KMS when it cannot be reached, within bounds, before telling the client to retry.

The enclave reaches KMS through two relays (its own forwarder, the parent's vsock-proxy); a KMS or
relay restart, or a network blip, looks like a refused or reset connection for a moment. A few
attempts spaced out with jittered exponential backoff ride that out; an outage that lasts longer
must not hold the client's request (and its connection slot) for long, so the attempts and the
total time are both capped, and what remains is a typed, retryable ``kms_unavailable``.
A refusal (the policy says no, the blob is bad) is never retried: asking again cannot change it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TypeVar

from nitro_llm.enclave.errors import KmsUnavailableError

log = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    attempts: int = 4
    base_delay: float = 0.25
    max_delay: float = 2.0
    deadline: float = 8.0
    """Seconds from the first attempt after which no new attempt starts."""

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.base_delay < 0 or self.max_delay < 0 or self.deadline <= 0:
            raise ValueError("attempts >= 1, non-negative delays and a positive deadline are required")

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
    """Run ``call``; on ``KmsUnavailableError`` try again while attempts and time remain."""
    rng = rng or random.Random()  # jitter, not a secret
    started = clock()
    last: KmsUnavailableError | None = None
    for attempt in range(1, policy.attempts + 1):
        try:
            return call()
        except KmsUnavailableError as exc:
            last = exc
        pause = policy.delay(attempt, rng)
        if attempt == policy.attempts or clock() - started + pause > policy.deadline:
            break
        log.info("request=%s kms_retry attempt=%d pause_ms=%d", request_id, attempt, int(pause * 1000))
        sleep(pause)
    assert last is not None
    raise KmsUnavailableError(
        f"{last.message} (gave up after {attempt} attempts in {clock() - started:.1f} s)",
        hint="KMS or the relay to it is unreachable; retry the request in a few seconds",
    )
