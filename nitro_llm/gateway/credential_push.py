"""Keep the enclave supplied with the role's credentials: on a schedule, and at once when KMS finds
them expired.

The enclave has no network: it cannot fetch the instance role's credentials itself, and they expire.
So the gateway hands them over every ``PUSH_PERIOD_SECONDS``, well inside the margin in which IMDS
already has the next ones (nitro_llm/gateway/credential_timing.py has the numbers and why). If KMS
refuses the token as expired anyway (a gateway clock that is off, a revoked session), the enclave
answers the request with ``credentials_expired``: the gateway then fetches fresh credentials past any
cache (the source's ``refresh()`` where it has one), hands them over and resends the request once
(nitro_llm/gateway/app.py). Requests that hit the same expiry together share one fetch and hand-off.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Awaitable, Callable
from dataclasses import KW_ONLY, dataclass, field
from typing import Protocol, runtime_checkable

from nitro_llm.gateway.credential_timing import PUSH_PERIOD_SECONDS, PUSH_RETRY_SECONDS
from nitro_llm.gateway.credentials import CredentialsSource, RoleCredentials
from nitro_llm.gateway.enclave_link import EnclaveLink
from nitro_llm.gateway.enclave_monitor import hand_credentials

log = logging.getLogger("nitro_llm.gateway.credential_push")

EXPIRED_CODE = "credentials_expired"
"""The enclave's error code for a request KMS refused because the role's session token expired."""


@runtime_checkable
class RefreshableSource(Protocol):
    """A credentials source that can skip its cache (IMDS); one without (a file) reads afresh anyway."""

    def refresh(self) -> RoleCredentials: ...


class _Fetch:
    """A one-method source for ``hand_credentials``: whichever fetch the caller chose."""

    def __init__(self, fetch: Callable[[], RoleCredentials]) -> None:
        self.get = fetch


@dataclass(eq=False)
class CredentialsPusher:
    link: EnclaveLink
    source: CredentialsSource
    _: KW_ONLY
    period: float = PUSH_PERIOD_SECONDS
    retry_period: float = PUSH_RETRY_SECONDS
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep
    handed_off: threading.Event = field(default_factory=threading.Event, init=False)
    """Set once the enclave has taken credentials from this pusher (a readiness signal for tests and
    for anyone waiting on another thread)."""
    fresh_fetches: int = field(default=0, init=False)
    _fresh: asyncio.Task[bool] | None = field(default=None, init=False, repr=False)

    async def run(self) -> None:
        """Push now, then every period; retry quickly while the enclave has not taken them."""
        while True:
            ok = await self.push()
            await self.sleep(self.period if ok else self.retry_period)

    async def push(self) -> bool:
        """Hand over the source's current credentials (its cache, while valid); True once taken."""
        return self._taken(await hand_credentials(self.link, self.source))

    async def push_fresh(self) -> bool:
        """Fetch credentials past the source's cache and hand them over; concurrent callers share
        the one fetch in flight. True once the enclave has taken them."""
        task = self._fresh
        if task is None or task.done():
            task = self._fresh = asyncio.get_running_loop().create_task(self._push_fresh())
        return await asyncio.shield(task)

    async def _push_fresh(self) -> bool:
        self.fresh_fetches += 1
        source = self.source
        fetch = source.refresh if isinstance(source, RefreshableSource) else source.get
        ok = self._taken(await hand_credentials(self.link, _Fetch(fetch)))
        log.info("fresh credentials %s", "handed to the enclave" if ok else "could not be handed over")
        return ok

    def _taken(self, ok: bool) -> bool:
        if ok and not self.handed_off.is_set():
            log.info("credentials handed to the enclave")
            self.handed_off.set()
        return ok
