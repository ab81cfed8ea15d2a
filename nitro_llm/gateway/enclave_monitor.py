"""Watch the enclave from the gateway: notice when it is gone, say so, and notice when it is back.

The gateway cannot restart a Nitro enclave it does not own (on EC2 that is nitro-cli's job, and in
local mode the local stack's), but it can stop sending people into a dead link: while the enclave
is down every request gets 503 with Retry-After at once instead of a connect timeout, /healthz says
since when, and each down/up transition is logged. A restarted enclave is detected by its uptime
going backwards; it has no credentials yet, so they are handed over at once rather than at the
next scheduled refresh (which can be minutes away).

State comes from pings only. A failed request merely wakes the pinger: one request can fail for
its own reasons (a handler bug, a reset) while the enclave is fine, and declaring it down on that
would refuse everyone else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.clock import Clock, system_clock
from nitro_llm.gateway.credentials import CredentialsSource
from nitro_llm.gateway.enclave_link import EnclaveLink
from nitro_llm.gateway.errors import EnclaveTimeout, EnclaveUnavailable
from nitro_llm.protocol import frame_kinds

log = logging.getLogger("nitro_llm.gateway.enclave_monitor")

UP_INTERVAL = 5.0
DOWN_INTERVAL = 0.5
PING_TIMEOUT = 5.0
TIMEOUTS_BEFORE_DOWN = 3
"""A saturated enclave can be slow to answer a ping; only repeated silence counts as down. A refused
or missing socket counts at once."""


class EnclaveDown(EnclaveUnavailable, code="enclave_unavailable"):
    """the enclave is down or restarting; retry after the number of seconds in Retry-After"""


class EnclaveMonitor:
    def __init__(
        self,
        link: EnclaveLink,
        *,
        credentials: CredentialsSource | None = None,
        up_interval: float = UP_INTERVAL,
        down_interval: float = DOWN_INTERVAL,
        ping_timeout: float = PING_TIMEOUT,
        clock: Clock = system_clock,
    ) -> None:
        self._link = link
        self._clock = clock
        self._credentials = credentials
        self._up_interval = up_interval
        self._down_interval = down_interval
        self._ping_timeout = ping_timeout
        self.state = "unknown"  # unknown | up | down
        self._since = clock()
        self._timeouts = 0
        self._last_uptime: int | None = None
        self._wake: asyncio.Event | None = None
        self._last: tuple[float, dict[str, Any] | NitroLLMError] | None = None
        self._inflight: asyncio.Task[dict[str, Any] | NitroLLMError] | None = None
        self._handoff: asyncio.Task[None] | None = None
        self._was_up = False
        self.restarts_seen = 0
        self.outages = 0
        self.recoveries = 0
        self.last_error: str | None = None

    # -- what the request path asks ------------------------------------------------------------
    def check_available(self) -> None:
        """Raise 503 at once while the enclave is known to be down (never on 'unknown')."""
        if self.state == "down":
            raise EnclaveDown(f"the enclave has been unreachable for {self.down_seconds():.0f} s")

    def link_failed(self) -> None:
        """A request hit a broken link: ping now instead of at the next interval."""
        if self._wake is not None:
            self._wake.set()

    def down_seconds(self) -> float:
        return self._clock() - self._since if self.state == "down" else 0.0

    def snapshot(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "down_seconds": round(self.down_seconds(), 1),
            "outages": self.outages,
            "recoveries": self.recoveries,
            "restarts_seen": self.restarts_seen,
            "last_error": self.last_error,
        }

    # -- the pinger ----------------------------------------------------------------------------
    async def run(self) -> None:
        self._wake = asyncio.Event()
        while True:
            await self.probe()
            interval = self._down_interval if self.state != "up" else self._up_interval
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=interval)
            self._wake.clear()

    async def probe(self) -> None:
        with contextlib.suppress(NitroLLMError):
            await self.pong(max_age=0.0)

    async def pong(self, max_age: float = 1.0) -> dict[str, Any]:
        """The enclave's pong, at most ``max_age`` seconds old (a failure is cached alike);
        concurrent callers share one ping in flight.

        /healthz and /v1/enclave/stats answer anyone without a token; each would otherwise cost the
        enclave a connection, and a flood of them could fill its accept slots.
        """
        cached = self._last
        if cached is not None and self._clock() - cached[0] <= max_age:
            return _unwrap(cached[1])
        loop = asyncio.get_running_loop()
        inflight = self._inflight
        if inflight is None or inflight.done() or inflight.get_loop() is not loop:
            inflight = self._inflight = loop.create_task(self._ping())
        return _unwrap(await asyncio.shield(inflight))

    async def _ping(self) -> dict[str, Any] | NitroLLMError:
        try:
            reply = await self._link.call(frame_kinds.ping_frame(), timeout=self._ping_timeout)
            if reply.get("t") != "pong":
                raise EnclaveUnavailable("the enclave answered a ping with something else")
        except EnclaveTimeout as exc:
            self._last = (self._clock(), exc)
            self._timeouts += 1
            if self._timeouts >= TIMEOUTS_BEFORE_DOWN:
                self._mark_down(exc.code)
            return exc
        except NitroLLMError as exc:
            self._last = (self._clock(), exc)
            self._mark_down(exc.code)
            return exc
        self._last = (self._clock(), reply)
        self._timeouts = 0
        uptime = reply.get("uptime_seconds")
        if isinstance(uptime, int) and self._last_uptime is not None and uptime < self._last_uptime:
            self.restarts_seen += 1
            log.warning("enclave restarted (uptime went from %d s to %d s)", self._last_uptime, uptime)
        if isinstance(uptime, int):
            self._last_uptime = uptime
        self._mark_up()
        if reply.get("has_credentials") is False and self._credentials is not None:
            # Whichever ping sees it first: a (re)started enclave must not wait for the schedule.
            if self._handoff is None or self._handoff.done():
                self._handoff = asyncio.get_running_loop().create_task(self._hand_credentials())
        return reply

    def _mark_down(self, reason: str) -> None:
        self.last_error = reason
        if self.state != "down":
            if self.state == "up":
                self.outages += 1
            self.state = "down"
            self._since = self._clock()
            log.warning("enclave unreachable (%s): answering 503 until it is back", reason)

    def _mark_up(self) -> None:
        if self.state != "up":
            if self.state == "down" and self._was_up:  # not the first start
                self.recoveries += 1
                log.warning("enclave reachable again after %.1f s", self._clock() - self._since)
            self.state = "up"
            self._was_up = True
            self._since = self._clock()

    async def _hand_credentials(self) -> None:
        assert self._credentials is not None
        try:
            if await hand_credentials(self._link, self._credentials):
                log.info("credentials handed to the (re)started enclave")
        except Exception as exc:  # a bug here must show, not die silently in a background task
            log.warning("credentials hand-off failed: %s", type(exc).__name__)


async def hand_credentials(link: EnclaveLink, source: CredentialsSource) -> bool:
    """Give the enclave the role's current credentials; True once it has taken them. Refusals and
    link trouble are logged by code (never the credentials) and answered False."""
    try:
        creds = await asyncio.to_thread(source.get)
        reply = await link.call(frame_kinds.credentials_frame(creds))
    except NitroLLMError as exc:
        log.info("credentials hand-off pending: %s", exc.code)
        return False
    return reply.get("t") == "ok"


def _unwrap(result: dict[str, Any] | NitroLLMError) -> dict[str, Any]:
    """A copy for each caller: a shared result must not be mutated, nor one exception re-raised
    by many callers (its traceback would grow with each)."""
    if isinstance(result, NitroLLMError):
        raise type(result)(result.message)
    return dict(result)
