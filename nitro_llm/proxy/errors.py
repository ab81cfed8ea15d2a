"""Proxy errors, and how any error becomes an OpenAI-shaped response.

OpenAI clients act on the HTTP status (retry on 5xx) and show ``error.message``; ``error.code`` keeps
our stable code so a person can look it up. As everywhere, messages carry no plaintext: a request
body is never echoed back.
"""

from __future__ import annotations

import re
from typing import Any

from nitro_llm.attestation.errors import AttestationError
from nitro_llm.client.attested_verify import AttestedVerificationError
from nitro_llm.errors import ConfigError, NitroLLMError
from nitro_llm.inference.errors import ContextOverflowError
from nitro_llm.protocol.errors import RequestSchemaError

#: A hint naming a Python module ("see nitro_llm.protocol.messages") helps a developer of this
#: project, not someone calling an HTTP API: such hints are left out of HTTP error messages.
_PYTHON_MODULE = re.compile(r"\bnitro_llm\w*\.\w+")
#: OpenAI's code for a conversation longer than the model's context window.
CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"


class ProxyError(NitroLLMError):
    code = "proxy_error"
    status = 500
    openai_type = "server_error"


class InvalidRequestError(
    ProxyError, code="invalid_request", status=400, openai_type="invalid_request_error"
):
    """see https://platform.openai.com/docs/api-reference/chat/create for the request shape"""


class UnsupportedMediaTypeError(InvalidRequestError, code="unsupported_media_type", status=415):
    """send the body as JSON with 'Content-Type: application/json'"""


class UnsupportedFeatureError(InvalidRequestError, code="unsupported_feature"):
    """the confidential model answers plain chat: leave out tools, images, n>1 and logprobs"""


# A conversation name (X-Nitro-Conversation, prompt_cache_key) that is malformed or ambiguous
# (proxy/conversations.py). The message never quotes the name.
class ConversationNameError(InvalidRequestError, code="invalid_conversation"):
    """name a chat with 1 to 256 printable characters (the same in X-Nitro-Conversation and
    prompt_cache_key when both are sent)"""


class NotFoundError(ProxyError, code="not_found", status=404, openai_type="invalid_request_error"):
    pass


# The backend could not verify the enclave: the proxy refuses to send anything.
class BlockedError(ProxyError, code="enclave_not_verified", status=403, openai_type="enclave_not_verified"):
    pass


def error_body(message: str, error_type: str, code: str, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": param}}


def to_openai(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Map any exception to (HTTP status, OpenAI error body); unknown ones say nothing specific."""
    if isinstance(exc, ProxyError):
        return exc.status, error_body(_public(exc), exc.openai_type, exc.code)
    if isinstance(exc, RequestSchemaError):
        message = _public(exc, InvalidRequestError.default_hint)
        return 400, error_body(message, "invalid_request_error", exc.code)
    if isinstance(exc, NitroLLMError) and exc.code == ContextOverflowError.code:
        # The enclave's typed refusal (it arrives as the client's ServiceRefusedError with this code): a
        # client error, and OpenAI's SDKs and frameworks look for exactly this code to trim history.
        message = _public(exc)
        return 400, error_body(message, "invalid_request_error", CONTEXT_LENGTH_EXCEEDED, "messages")
    if isinstance(exc, AttestationError | AttestedVerificationError | ConfigError):
        return 403, error_body(_public(exc), "enclave_not_verified", exc.code)
    if isinstance(exc, NitroLLMError):
        status = 503 if exc.retryable else 502
        return status, error_body(_public(exc), "upstream_error", exc.code)
    return 500, error_body("the proxy failed unexpectedly; see its log", "server_error", "internal_error")


def _public(exc: NitroLLMError, fallback_hint: str = "") -> str:
    """The message and its hint, unless the hint names a Python module (then ``fallback_hint``)."""
    hint = fallback_hint if _PYTHON_MODULE.search(exc.hint) else exc.hint
    return f"{exc.message} ({hint})" if hint else exc.message


#: OpenAI's codes for errors the HTTP layer itself raises (unknown path, wrong method).
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


def http_error(status: int, method: str, path: str) -> dict[str, Any]:
    """OpenAI's error object for an error of the HTTP layer (FastAPI would answer ``{"detail": ...}``)."""
    shown = f"{method} {path[:200]}"
    if status == 404:
        message = f"no such endpoint: {shown} (the proxy serves /v1/chat/completions and /v1/models)"
    elif status == 405:
        message = f"method not allowed: {shown}"
    else:
        message = f"the request failed with HTTP {status}: {shown}"
    code = _HTTP_CODES.get(status, f"http_{status}")
    return error_body(message, "invalid_request_error" if status < 500 else "server_error", code)
