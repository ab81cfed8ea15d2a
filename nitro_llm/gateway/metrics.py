"""What ``/metrics`` counts: every request to a metered route, once, with its outcome and duration.

Counted in one place, an ASGI layer outside everything else (admission included), so that the
counter and the histogram see the same requests by construction: before, refusals were counted
where they were raised and durations only for answered inferences, and the two disagreed (16
requests against 6 observations). A request's outcome is the error code that a handler or the
admission layer records in ``scope["state"]["outcome"]`` (see :func:`record_outcome`), else "ok"
for a 2xx answer and ``http_<status>`` otherwise. Labels carry route templates and codes only:
nothing a client sent.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from nitro_llm.gateway.clock import Clock, system_clock

OUTCOME = "outcome"
ROUTE_INFER = "/v1/infer"
ROUTE_ATTESTATION = "/v1/attestation"
ROUTE_SEED = "/"


class GatewayMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "nitro_llm_gateway_requests",
            "Requests to the metered routes, by route and outcome (refusals included)",
            ["route", "outcome"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "nitro_llm_gateway_seconds",
            "Duration of the same requests, until the last byte of the answer",
            ["route"],
            registry=self.registry,
        )
        self.bytes_in = Counter("nitro_llm_gateway_bytes_in", "Sealed bytes received", registry=self.registry)
        self.bytes_out = Counter(
            "nitro_llm_gateway_bytes_out", "Sealed bytes relayed", registry=self.registry
        )


def record_outcome(scope: MutableMapping[str, Any], code: str) -> None:
    """Name the outcome of the request in ``scope`` (an error code); the first one recorded stands."""
    scope.setdefault("state", {}).setdefault(OUTCOME, code)


class RequestMetrics:
    """Pure ASGI, outermost: sees every request to ``routes`` (exact paths), answered or refused."""

    def __init__(
        self, app: ASGIApp, *, metrics: GatewayMetrics, routes: frozenset[str], clock: Clock = system_clock
    ) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self.clock = clock

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        route = scope.get("path", "")
        if scope["type"] != "http" or route not in self.routes:
            await self.app(scope, receive, send)
            return
        started = self.clock()
        status = 0

        async def watch(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, watch)
        finally:
            # Also when the client went away mid-answer or the app failed: counted once either way.
            outcome = scope.get("state", {}).get(OUTCOME)
            if outcome is None:
                outcome = "ok" if 200 <= status < 300 else f"http_{status or 500}"
            self.metrics.requests.labels(route=route, outcome=outcome).inc()
            self.metrics.latency.labels(route=route).observe(self.clock() - started)
