"""KMS unreachable: bounded retries with backoff, then a typed, retryable error; refusals are final."""

from __future__ import annotations

import random

import pytest

from nitro_llm.enclave.errors import KeyReleaseDeniedError, KmsUnavailableError
from nitro_llm.enclave.kms_retry import RetryPolicy, with_retries


class Clock:
    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


def flaky(failures: int, clock: Clock, cost: float = 0.0):
    calls = {"n": 0}

    def call() -> str:
        calls["n"] += 1
        clock.now += cost
        if calls["n"] <= failures:
            raise KmsUnavailableError("KMS could not be reached for request r (ConnectionClosedError)")
        return "key"

    return call, calls


def run(call, clock: Clock, policy: RetryPolicy):
    return with_retries(
        call, policy, request_id="r", sleep=clock.sleep, clock=lambda: clock.now, rng=random.Random(1)
    )


def test_rides_out_a_short_outage():
    clock = Clock()
    call, calls = flaky(2, clock)
    assert run(call, clock, RetryPolicy(attempts=4)) == "key"
    assert calls["n"] == 3 and len(clock.sleeps) == 2


def test_gives_up_after_the_attempts_with_a_typed_retryable_error():
    clock = Clock()
    call, calls = flaky(100, clock)
    with pytest.raises(KmsUnavailableError) as info:
        run(call, clock, RetryPolicy(attempts=4, base_delay=0.25, max_delay=2.0, deadline=60))
    assert calls["n"] == 4 and info.value.retryable and info.value.code == "kms_unavailable"
    assert "gave up after 4 attempts" in info.value.message
    assert all(0 <= s <= min(2.0, 0.25 * 2**i) for i, s in enumerate(clock.sleeps))


def test_the_deadline_bounds_slow_attempts():
    clock = Clock()
    call, calls = flaky(100, clock, cost=3.0)  # each attempt hangs 3 s before failing
    with pytest.raises(KmsUnavailableError):
        run(call, clock, RetryPolicy(attempts=10, deadline=8.0))
    assert calls["n"] <= 3 and clock.now <= 8.0 + 3.0 + 2.0


def test_a_refusal_is_never_retried():
    clock = Clock()
    calls = {"n": 0}

    def denied() -> str:
        calls["n"] += 1
        raise KeyReleaseDeniedError("KMS refused to release the key for request r: AccessDeniedException")

    with pytest.raises(KeyReleaseDeniedError):
        run(denied, clock, RetryPolicy(attempts=5))
    assert calls["n"] == 1 and clock.sleeps == []
