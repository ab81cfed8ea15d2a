"""The gateway: an HTTP front for the enclave on the untrusted parent host.

It sees sealed envelopes and sealed answer chunks only, and is built so that it could not log content
even by mistake: request bodies are never decoded, and log lines carry sizes, statuses and timings.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from nitro_llm.gateway.admission import AccessSettings, Admission
from nitro_llm.gateway.attestation import ATTESTATION_MEDIA_TYPE, DEFAULT_SUITE, fetch_attestation
from nitro_llm.gateway.busy import busy_refusal
from nitro_llm.gateway.clock import Clock
from nitro_llm.gateway.credential_push import EXPIRED_CODE, CredentialsPusher
from nitro_llm.gateway.credentials import CredentialsSource
from nitro_llm.gateway.enclave_link import EnclaveLink
from nitro_llm.gateway.enclave_monitor import EnclaveMonitor
from nitro_llm.gateway.errors import (
    BadRequest,
    EnclaveUnavailable,
    GatewayError,
    RequestTooLarge,
    error_response,
)
from nitro_llm.gateway.first_frame import leading_error_code
from nitro_llm.gateway.fleet_keys import FleetKeyPusher, FleetKeySource, fleet_key_health
from nitro_llm.gateway.metrics import (
    ROUTE_ATTESTATION,
    ROUTE_INFER,
    ROUTE_SEED,
    GatewayMetrics,
    RequestMetrics,
    record_outcome,
)
from nitro_llm.gateway.ratelimit import Limiter
from nitro_llm.gateway.seams import build_seams
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.protocol.frame_codec import encode_frame

log = logging.getLogger("nitro_llm.gateway")

FRAMES_MEDIA_TYPE = "application/x-nitro-llm-frames"
_SEED_FORBIDDEN = frozenset({"kms_denied", "kms_signature_rejected"})
"""Enclave codes the seed route answers with 403: KMS refused the caller (policy, or its signature)."""


async def _read_body_capped(request: Request, limit: int) -> bytes:
    """Refuse oversize bodies from the Content-Length header, and again while streaming, so that a
    lying or absent header cannot make the gateway buffer more than ``limit`` bytes."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest("the Content-Length header is not a number")
        if int(declared) > limit:
            raise RequestTooLarge(f"request body of {declared} bytes exceeds the {limit}-byte limit")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise RequestTooLarge(f"request body exceeds the {limit}-byte limit")
        chunks.append(chunk)
    if size == 0:
        raise BadRequest("empty request body")
    return b"".join(chunks)


async def _first_frame(answer: AsyncIterator[bytes]) -> bytes:
    try:
        return await anext(answer)
    except StopAsyncIteration:
        raise EnclaveUnavailable("the enclave closed the link without answering") from None


def create_app(
    settings: GatewaySettings,
    *,
    credentials: CredentialsSource | None = None,
    access: AccessSettings | None = None,
    link: EnclaveLink | None = None,
    limiter: Limiter | None = None,
    clock: Clock | None = None,
    monitor: EnclaveMonitor | None = None,
    fleet_keys: FleetKeySource | None = None,
) -> FastAPI:
    """The gateway's ASGI app. ``link``, ``limiter``, ``clock`` and ``monitor`` are its seams (see
    :mod:`nitro_llm.gateway.seams`): those not given are built from ``settings``. ``fleet_keys``: a
    fleet replica's key file, kept handed to the enclave (gateway/fleet_keys.py)."""
    seams = build_seams(
        settings, credentials=credentials, link=link, limiter=limiter, clock=clock, monitor=monitor
    )
    link, monitor, clock = seams.link, seams.monitor, seams.clock  # as given, or the defaults
    metrics = GatewayMetrics()
    pusher = (
        CredentialsPusher(link, credentials, period=settings.credentials_refresh_seconds)
        if credentials
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        task = asyncio.create_task(pusher.run()) if pusher else None
        watch = asyncio.create_task(monitor.run())
        fleet = (
            asyncio.create_task(FleetKeyPusher(link, monitor, fleet_keys, clock=clock).run())
            if fleet_keys
            else None
        )
        try:
            yield
        finally:
            if fleet:
                fleet.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await fleet
            watch.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await watch
            if task:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task

    app = FastAPI(title="nitro-llm gateway", lifespan=lifespan, docs_url=None, redoc_url=None)
    app.state.link = link
    app.state.monitor = monitor
    app.state.credentials_pusher = pusher
    # Tokens, enclave availability (503), per-client rate and concurrency (429), body deadline (408).
    app.add_middleware(
        Admission, settings=access or AccessSettings(), limiter=seams.limiter, monitor=monitor, clock=clock
    )
    # Outermost (added last): counts each request to these routes once, refused or answered.
    metered = {ROUTE_INFER, ROUTE_ATTESTATION} | ({ROUTE_SEED} if settings.seed_route else set())
    app.add_middleware(RequestMetrics, metrics=metrics, routes=frozenset(metered), clock=clock)

    @app.exception_handler(GatewayError)
    async def _gateway_error(request: Request, exc: GatewayError) -> JSONResponse:
        record_outcome(request.scope, exc.code)
        log.info("refused status=%d code=%s", exc.status_code, exc.code)
        if isinstance(exc, EnclaveUnavailable):
            monitor.link_failed()
        return error_response(exc)

    @app.get("/healthz")
    async def healthz() -> JSONResponse:
        try:
            reply = await monitor.pong(max_age=1.0)
            enclave = fleet_key_health(reply) if reply.get("t") == "pong" else "unexpected-reply"
        except GatewayError as exc:
            enclave = exc.code
        status = 200 if enclave == "ok" else 503
        body: dict[str, object] = {"gateway": "ok", "enclave": enclave}
        if status != 200 or monitor.outages or monitor.restarts_seen:
            body["supervision"] = monitor.snapshot()  # Nitro mode: the operator's signal to restart
        return JSONResponse(body, status_code=status)

    @app.get("/v1/enclave/stats")
    async def enclave_stats() -> JSONResponse:
        """Counters the enclave publishes (no content): requests served, KMS calls made."""
        reply = await monitor.pong(max_age=0.0)  # fresh, but one ping for concurrent callers
        return JSONResponse({k: v for k, v in reply.items() if k != "t"})

    @app.get("/v1/attestation")
    async def attestation(nonce: str = "", suite: str = DEFAULT_SUITE) -> Response:
        """A fresh attestation of the enclave's session key, for the client to verify (we cannot)."""
        return Response(await fetch_attestation(link, nonce, suite), media_type=ATTESTATION_MEDIA_TYPE)

    @app.get("/metrics")
    async def prometheus() -> Response:
        return Response(generate_latest(metrics.registry), media_type=CONTENT_TYPE_LATEST)

    if settings.seed_route:
        log.warning("seed-compatible route POST / enabled: client AWS credentials will pass this host")

        @app.post("/")
        async def seed_compatible(request: Request) -> JSONResponse:
            """The seed's request and response shapes, relayed to the enclave without being read
            (they carry the client's credentials: never logged)."""
            body = await _read_body_capped(request, min(settings.max_body_bytes, 64 * 1024))
            reply = await link.call({"t": "seed", "body": body}, timeout=settings.first_frame_timeout)
            if reply.get("t") == "seed_result" and isinstance(reply.get("encrypted_data"), str):
                return JSONResponse({"EncryptedData": reply["encrypted_data"]})
            code = str(reply.get("code", "bad_enclave_reply"))
            record_outcome(request.scope, code)
            log.info("seed route refused code=%s", code)
            status = 503 if reply.get("retryable") else 403 if code in _SEED_FORBIDDEN else 400
            wire = {k: reply.get(k) for k in ("code", "message", "hint", "retryable")}
            return JSONResponse(wire, status_code=status)

    @app.post("/v1/infer")
    async def infer(request: Request) -> Response:
        started = clock()
        body = await _read_body_capped(request, settings.max_body_bytes)
        metrics.bytes_in.inc(len(body))
        answer = link.infer(body)
        first = await _first_frame(answer)
        if pusher is not None and leading_error_code(first) == EXPIRED_CODE:
            # KMS refused the enclave's role credentials as expired before anything was answered (and
            # before the request id was claimed): hand over fresh ones and resend, once.
            await answer.aclose()
            log.info("infer credentials_expired: handing over fresh credentials and resending once")
            await pusher.push_fresh()
            answer = link.infer(body)
            first = await _first_frame(answer)
        if (busy := busy_refusal(first)) is not None:  # queue full: 429 + Retry-After, not a 200
            await answer.aclose()
            raise busy
        if (refused := leading_error_code(first)) is not None:  # relayed as it is; /metrics names the code
            record_outcome(request.scope, refused)

        async def relay() -> AsyncIterator[bytes]:
            sent, count, outcome = len(first), 1, "ok"
            try:
                yield first
                async for frame in answer:
                    sent += len(frame)
                    count += 1
                    yield frame
            except GatewayError as exc:
                # Never a silent truncation: the client gets a typed error frame it can act on.
                outcome = exc.code
                record_outcome(request.scope, exc.code)
                monitor.link_failed()
                yield encode_frame({"t": "error", **exc.to_wire()})
            finally:
                await answer.aclose()
                metrics.bytes_out.inc(sent)
                elapsed = clock() - started
                log.info(
                    "infer outcome=%s bytes_in=%d bytes_out=%d frames=%d ms=%.1f",
                    outcome,
                    len(body),
                    sent,
                    count,
                    elapsed * 1000,
                )

        return StreamingResponse(relay(), media_type=FRAMES_MEDIA_TYPE)

    return app
