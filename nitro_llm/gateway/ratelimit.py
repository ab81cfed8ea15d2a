"""Per-client admission: a token bucket for the request rate and a cap on concurrent requests.

The enclave answers one generation at a time and queues a few; without a per-client bound one
client (or one stolen token) could keep that queue full and starve every other client. A refused
request gets 429 with a Retry-After the client can honour: for the rate, the time until the bucket
holds a token again; for concurrency, a short pause, since a slot frees when any answer ends.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass

from nitro_llm.gateway.auth import Client, ClientLimits
from nitro_llm.gateway.clock import Clock, system_clock
from nitro_llm.gateway.errors import GatewayError

CONCURRENCY_RETRY_AFTER = 1


class RateLimited(GatewayError, code="rate_limited", retryable=True, status_code=429):
    """slow down: retry after the number of seconds in the Retry-After header"""

    def __init__(self, message: str, *, retry_after: int, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.retry_after = max(1, retry_after)


class TooManyConcurrent(RateLimited, code="too_many_concurrent_requests"):
    """wait for one of your answers to finish, then retry (see Retry-After)"""


class TokenBucket:
    """``burst`` tokens at most, refilled at ``rate`` per second; one request takes one token."""

    def __init__(self, rate: float, burst: int, *, clock: Clock = system_clock) -> None:
        if rate <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self.rate = rate
        self.burst = burst
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def take(self) -> float:
        """0.0 if a token was taken, else the seconds until one will be there (nothing taken)."""
        now = self._clock()
        self._tokens = min(float(self.burst), self._tokens + (now - self._updated) * self.rate)
        self._updated = now
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


@dataclass
class _ClientState:
    bucket: TokenBucket | None
    active: int = 0


class Lease:
    """A concurrency slot held until the answer has been relayed; releasing twice is harmless."""

    def __init__(self, limiter: Limiter, name: str) -> None:
        self._limiter = limiter
        self._name = name
        self._released = False

    def release(self) -> None:
        if not self._released:
            self._released = True
            self._limiter._release(self._name)


class Limiter:
    """Admission state for every client. Its size is bounded by the number of configured clients
    (plus the anonymous one): unauthenticated callers never get state of their own."""

    def __init__(self, *, clock: Clock = system_clock) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._clients: dict[str, _ClientState] = {}
        self._limits: dict[str, ClientLimits] = {}
        self.refused = {"rate_limited": 0, "too_many_concurrent_requests": 0}

    def _state(self, client: Client) -> _ClientState:
        state = self._clients.get(client.name)
        if state is None or self._limits.get(client.name) != client.limits:
            limits = client.limits
            bucket = None
            if limits.rate_per_second is not None:
                rate = limits.rate_per_second
                burst = limits.burst if limits.burst is not None else max(1, math.ceil(rate))
                bucket = TokenBucket(limits.rate_per_second, burst, clock=self._clock)
            active = state.active if state else 0
            state = _ClientState(bucket, active)
            self._clients[client.name] = state
            self._limits[client.name] = limits
        return state

    def admit(self, client: Client) -> Lease:
        """Take a rate token and a concurrency slot, or raise 429 (and take neither)."""
        with self._lock:
            state = self._state(client)
            cap = client.limits.max_concurrent
            if cap is not None and state.active >= cap:
                self.refused["too_many_concurrent_requests"] += 1
                raise TooManyConcurrent(
                    f"client {client.name!r} already has {state.active} requests in flight (limit {cap})",
                    retry_after=CONCURRENCY_RETRY_AFTER,
                )
            if state.bucket is not None:
                wait = state.bucket.take()
                if wait > 0:
                    self.refused["rate_limited"] += 1
                    raise RateLimited(
                        f"client {client.name!r} is over its rate of "
                        f"{state.bucket.rate:g} requests per second",
                        retry_after=math.ceil(wait),
                    )
            state.active += 1
        return Lease(self, client.name)

    def active(self, name: str) -> int:
        with self._lock:
            state = self._clients.get(name)
            return state.active if state else 0

    def _release(self, name: str) -> None:
        with self._lock:
            state = self._clients.get(name)
            if state is not None and state.active > 0:
                state.active -= 1
