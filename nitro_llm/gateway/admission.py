"""The gateway's front door, as one ASGI middleware: who you are, whether the enclave is there,
whether you are within your limits, and how long you may take to send your body.

Order matters: authentication first (an unknown caller learns nothing else and gets no state of its
own), then the enclave's availability (no point queueing for a dead link), then the client's rate
and concurrency. The concurrency slot is held until the answer has been relayed in full, since that
is what occupies the enclave. Only the routes that reach the enclave with a client's request are
guarded; /healthz, /metrics and /v1/enclave/stats carry counters only and stay open to monitoring.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitro_llm.gateway.auth import ANONYMOUS, Client, ClientLimits, TokenRegistry
from nitro_llm.gateway.clock import Clock, system_clock
from nitro_llm.gateway.enclave_monitor import EnclaveMonitor
from nitro_llm.gateway.errors import GatewayError, error_response
from nitro_llm.gateway.metrics import record_outcome
from nitro_llm.gateway.ratelimit import Limiter

log = logging.getLogger("nitro_llm.gateway.admission")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]

DEFAULT_BODY_TIMEOUT = 30.0
DEFAULT_TOKEN_LIMITS = ClientLimits(rate_per_second=5.0, burst=20, max_concurrent=4)
"""For clients whose tokens-file entry names no limits of their own."""
GUARDED_PATHS = ("/v1/infer", "/v1/attestation")
"""Path prefixes that reach the enclave with a client's request."""


class RequestTimeout(GatewayError, code="request_timeout", retryable=True, status_code=408):
    """send the whole request body promptly; check the network between you and the gateway"""


@dataclass(frozen=True)
class AccessSettings:
    tokens_file: Path | None = None
    """None: no authentication (a private or loopback gateway). Set it on any exposed gateway."""
    limits: ClientLimits | None = None
    """Limits for clients without their own; None: DEFAULT_TOKEN_LIMITS with tokens, none without."""
    body_timeout: float = DEFAULT_BODY_TIMEOUT
    guarded_paths: tuple[str, ...] = field(default=GUARDED_PATHS)

    def effective_limits(self) -> ClientLimits:
        if self.limits is not None:
            return self.limits
        return DEFAULT_TOKEN_LIMITS if self.tokens_file is not None else ClientLimits()


class Admission:
    """Pure ASGI (not BaseHTTPMiddleware) so streamed answers pass through untouched."""

    def __init__(
        self,
        app: ASGIApp,
        *,
        settings: AccessSettings,
        limiter: Limiter,
        monitor: EnclaveMonitor | None = None,
        clock: Clock = system_clock,
    ) -> None:
        self.app = app
        self.settings = settings
        self.limiter = limiter
        self.monitor = monitor
        limits = settings.effective_limits()
        self.registry = (
            TokenRegistry(settings.tokens_file, defaults=limits, clock=clock)
            if settings.tokens_file is not None
            else None
        )
        self.anonymous = Client(ANONYMOUS, limits)
        self.refused: dict[str, int] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or not self._guarded(scope):
            await self.app(scope, receive, send)
            return
        try:
            client = self._authenticate(scope)
            if self.monitor is not None:
                self.monitor.check_available()
            lease = self.limiter.admit(client)
        except GatewayError as exc:
            self.refused[exc.code] = self.refused.get(exc.code, 0) + 1
            record_outcome(scope, exc.code)
            log.info("refused status=%d code=%s path=%s", exc.status_code, exc.code, scope["path"])
            await error_response(exc, close=True)(scope, receive, send)
            return
        scope.setdefault("state", {})["client"] = client.name
        body = _BodyState()

        async def send_closing_if_unread(message: Message) -> None:
            # A refusal sent before the body was read in full (413, 408...) closes the connection:
            # otherwise the server would go on reading, and discarding, whatever the client sends.
            if message["type"] == "http.response.start" and message["status"] >= 400 and not body.done:
                message = {**message, "headers": [*message.get("headers", []), (b"connection", b"close")]}
            await send(message)

        try:
            await self.app(
                scope, _body_deadline(receive, self.settings.body_timeout, body), send_closing_if_unread
            )
        finally:
            lease.release()

    def _guarded(self, scope: Scope) -> bool:
        # Not the seed-compatible route (POST /): the AWS sample's client cannot send a token. It is
        # off by default, and its own body cap and the enclave's queue bound it.
        return bool(scope["path"].startswith(self.settings.guarded_paths))

    def _authenticate(self, scope: Scope) -> Client:
        if self.registry is None:
            return self.anonymous
        authorization = None
        for name, value in scope.get("headers", ()):
            if name == b"authorization":
                authorization = value.decode("latin-1")
                break
        return self.registry.authenticate(authorization)


@dataclass
class _BodyState:
    done: bool = False


def _body_deadline(receive: Receive, timeout: float, state: _BodyState) -> Receive:
    """``receive`` with one deadline for the whole request body; once the body is complete, calls
    pass straight through (the streaming answer listens on receive for the client going away)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout

    async def timed() -> Message:
        if state.done:
            return await receive()
        remaining = deadline - loop.time()
        try:
            if remaining <= 0:
                raise TimeoutError
            message = await asyncio.wait_for(receive(), remaining)
        except TimeoutError:
            raise RequestTimeout(f"the request body did not arrive within {timeout:g} s") from None
        if message.get("type") != "http.request" or not message.get("more_body", False):
            state.done = True
        return message

    return timed
