"""The proxy's HTTP surface: OpenAI's chat-completions API and the web chat, on the user's machine.

It holds plaintext (it is the data owner's side), so it is built to be reachable only by the user:
it listens on loopback, accepts only loopback Host headers (a web page elsewhere cannot reach it by
DNS rebinding), requires JSON bodies (a cross-site form cannot post one), sends no CORS headers,
and marks every answer ``no-store``. The web chat runs under a strict Content-Security-Policy
whose only allowed script and style are the page's own inline blocks, pinned by hash.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator
from importlib import resources
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.middleware.trustedhost import TrustedHostMiddleware

from nitro_llm.errors import NitroLLMError
from nitro_llm.proxy import openai_schema as oai
from nitro_llm.proxy.backend_seam import BackendChunk, ConfidentialBackend
from nitro_llm.proxy.conversations import CONVERSATION_HEADER
from nitro_llm.proxy.errors import (
    BlockedError,
    InvalidRequestError,
    UnsupportedMediaTypeError,
    error_body,
    http_error,
    to_openai,
)
from nitro_llm.proxy.verification import verification_panel

log = logging.getLogger(__name__)

LOOPBACK_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")
_NO_STORE = {"cache-control": "no-store"}
_MAX_BODY = 8 * 1024 * 1024


def create_app(
    backend: ConfidentialBackend,
    *,
    allowed_hosts: tuple[str, ...] | None = LOOPBACK_HOSTS,
) -> FastAPI:
    """``allowed_hosts=None`` disables the Host check (tests, or a deliberate reverse-proxy setup)."""
    app = FastAPI(title="nitro-llm proxy", docs_url=None, redoc_url=None, openapi_url=None)
    if allowed_hosts is not None:
        app.add_middleware(TrustedHostMiddleware, allowed_hosts=list(allowed_hosts))
    page, csp = _web_chat()

    @app.exception_handler(NitroLLMError)
    async def _typed_error(_request: Request, exc: NitroLLMError) -> JSONResponse:
        status, body = to_openai(exc)
        if status >= 500:
            log.warning("request failed: %s", exc.code)
        return JSONResponse(body, status_code=status, headers=_NO_STORE)

    @app.exception_handler(HTTPException)
    async def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
        """Unknown paths and wrong methods in OpenAI's error shape, not FastAPI's ``{"detail": ...}``."""
        body = http_error(exc.status_code, request.method, request.url.path)
        headers = {**(exc.headers or {}), **_NO_STORE}
        return JSONResponse(body, status_code=exc.status_code, headers=headers)

    @app.exception_handler(RequestValidationError)
    async def _invalid(_request: Request, _exc: RequestValidationError) -> JSONResponse:
        message = "the request is not valid for this endpoint"
        body = error_body(message, "invalid_request_error", "bad_request")
        return JSONResponse(body, status_code=400, headers=_NO_STORE)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        log.error("unexpected %s in the proxy", type(exc).__name__)  # no message: it may quote content
        status, body = to_openai(exc)
        return JSONResponse(body, status_code=status, headers=_NO_STORE)

    @app.get("/", response_class=HTMLResponse)
    def web_chat() -> HTMLResponse:
        headers = {
            "content-security-policy": csp,
            "x-content-type-options": "nosniff",
            "referrer-policy": "no-referrer",
            "x-frame-options": "DENY",
            **_NO_STORE,
        }
        return HTMLResponse(page, headers=headers)

    @app.get("/healthz")
    def healthz() -> JSONResponse:
        """The proxy is up. Cheap on purpose: it does not ask the gateway (GET /v1/verification does)."""
        return JSONResponse({"status": "ok"}, headers=_NO_STORE)

    @app.get("/v1/models")
    def models() -> JSONResponse:
        model = {"id": backend.model_id, "object": "model", "created": 0, "owned_by": "nitro-llm"}
        return JSONResponse({"object": "list", "data": [model]}, headers=_NO_STORE)

    @app.get("/v1/models/{model_id}")
    def model(model_id: str) -> JSONResponse:
        if model_id != backend.model_id:
            _status, body = to_openai(InvalidRequestError(f"no model named {model_id[:64]!r}"))
            return JSONResponse(body, status_code=404, headers=_NO_STORE)
        return JSONResponse(
            {"id": backend.model_id, "object": "model", "created": 0, "owned_by": "nitro-llm"},
            headers=_NO_STORE,
        )

    @app.get("/v1/verification")
    def verification() -> JSONResponse:
        """What was checked, by whom and when, and whether the enclave answers now (proxy/verification.py)."""
        facts = backend.describe()
        probe = getattr(backend, "probe", None)  # optional: a backend that cannot probe is not told down
        unreachable = probe() if callable(probe) else None
        return JSONResponse(verification_panel(facts, unreachable), headers=_NO_STORE)

    @app.post("/v1/chat/completions")
    async def chat_completions(request: Request) -> Response:
        body = await _json_body(request)
        parsed = oai.parse_request(body, conversation_headers=request.headers.getlist(CONVERSATION_HEADER))
        state = await run_in_threadpool(backend.describe)
        if state.get("verified") is False:
            raise BlockedError(
                f"the enclave is not verified: {state.get('failure_reason') or 'unknown reason'}",
                hint="nothing was sent; fix the policy or the deployment, then restart the proxy",
            )
        chat = parsed.chat
        given: dict[str, Any] = {}  # passed only when the caller set them (backend_seam.py)
        if chat.stop:
            given["stop"] = chat.stop  # sealed with the question, applied in the enclave
        if parsed.conversation is not None:
            # Named: its turns share one conversation (proxy/conversations.py); the name stays here.
            given["conversation"] = parsed.conversation
        chunks = backend.stream(
            [m.to_dict() for m in chat.messages],
            max_tokens=chat.max_tokens,
            temperature=chat.temperature,
            seed=chat.seed,
            **given,
        )
        # Pull the first piece before answering, so a refusal (verification, gateway, enclave) is an
        # HTTP error the client can act on, not a 200 with an error buried in the stream.
        first = await run_in_threadpool(_next_or_none, chunks)
        if not parsed.stream:
            return await run_in_threadpool(_collect, backend.model_id, first, chunks)
        return StreamingResponse(
            _sse(backend.model_id, first, chunks, include_usage=parsed.include_usage),
            media_type="text/event-stream",
            headers={**_NO_STORE, "x-accel-buffering": "no"},
        )

    return app


async def _json_body(request: Request) -> Any:
    content_type = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if content_type != "application/json":
        raise UnsupportedMediaTypeError("the request body must be JSON (Content-Type: application/json)")
    raw = await request.body()
    if len(raw) > _MAX_BODY:
        raise InvalidRequestError(f"the request body is larger than {_MAX_BODY} bytes")
    try:
        return json.loads(raw)
    except ValueError:
        raise InvalidRequestError("the request body is not valid JSON") from None


def _next_or_none(chunks: Iterator[BackendChunk]) -> BackendChunk | None:
    return next(chunks, None)


def _collect(model: str, first: BackendChunk | None, chunks: Iterator[BackendChunk]) -> JSONResponse:
    parts: list[str] = []
    last = first
    if first is not None:
        parts.append(first.text)
        for piece in chunks:
            parts.append(piece.text)
            last = piece
    reason = oai.finish_reason_of(last.finish_reason if last else None)
    body = oai.completion(oai.completion_id(), model, "".join(parts), reason, last.usage if last else None)
    return JSONResponse(body, headers=_NO_STORE)


def _sse(
    model: str, first: BackendChunk | None, chunks: Iterator[BackendChunk], *, include_usage: bool
) -> Iterator[str]:
    """Runs in a worker thread (Starlette iterates sync generators off the event loop).

    A failure after the first byte cannot change the status any more: it is sent as an OpenAI error
    event and the stream ends without ``[DONE]``, so no client mistakes a cut answer for a whole one.
    """
    cid, created = oai.completion_id(), int(time.time())
    yield _event(oai.chunk(cid, model, created, {"role": "assistant", "content": ""}))
    last: BackendChunk | None = None
    try:
        pieces = chunks if first is None else _chain(first, chunks)
        for piece in pieces:
            last = piece
            if piece.text:
                yield _event(oai.chunk(cid, model, created, {"content": piece.text}))
    except Exception as exc:
        _status, body = to_openai(exc)
        log.warning("stream failed: %s", body["error"]["code"])
        yield _event(body)
        return
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()
    reason = oai.finish_reason_of(last.finish_reason if last else None)
    yield _event(oai.chunk(cid, model, created, {}, reason))
    if include_usage:
        yield _event(oai.usage_chunk(cid, model, created, last.usage if last else None))
    yield "data: [DONE]\n\n"


def _chain(first: BackendChunk, rest: Iterator[BackendChunk]) -> Iterator[BackendChunk]:
    yield first
    yield from rest


def _event(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload, separators=(',', ':'), ensure_ascii=False)}\n\n"


def _web_chat() -> tuple[str, str]:
    """The page and a CSP that allows exactly its own inline script and style, by SHA-256."""
    page = resources.files("nitro_llm.proxy").joinpath("static", "index.html").read_text(encoding="utf-8")
    scripts = re.findall(r"<script>(.*?)</script>", page, flags=re.S)
    styles = re.findall(r"<style>(.*?)</style>", page, flags=re.S)

    def sources(blocks: list[str]) -> str:
        return " ".join(
            f"'sha256-{base64.b64encode(hashlib.sha256(b.encode()).digest()).decode()}'" for b in blocks
        )

    csp = (
        "default-src 'none'; "
        f"script-src {sources(scripts)}; style-src {sources(styles)}; "
        "connect-src 'self'; img-src data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    )
    return page, csp
