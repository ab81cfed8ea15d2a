"""Proxy errors, and how any error becomes an OpenAI-shaped response.

OpenAI clients act on the HTTP status (retry on 5xx) and show ``error.message``; ``error.code`` keeps
our stable code so a person can look it up. As everywhere, messages carry no plaintext: a request
body is never echoed back.
"""

from __future__ import annotations

from typing import Any

from nitro_llm.attestation.errors import AttestationError
from nitro_llm.client.attested_verify import AttestedVerificationError
from nitro_llm.errors import ConfigError, NitroLLMError
from nitro_llm.protocol.errors import RequestSchemaError


class ProxyError(NitroLLMError):
    code = "proxy_error"
    status = 500
    openai_type = "server_error"


class InvalidRequestError(ProxyError):
    code = "invalid_request"
    status = 400
    openai_type = "invalid_request_error"
    default_hint = "see https://platform.openai.com/docs/api-reference/chat/create for the request shape"


class UnsupportedMediaTypeError(InvalidRequestError):
    code = "unsupported_media_type"
    status = 415
    default_hint = "send the body as JSON with 'Content-Type: application/json'"


class UnsupportedFeatureError(InvalidRequestError):
    code = "unsupported_feature"
    default_hint = "the confidential model answers plain chat: leave out tools, images, n>1 and logprobs"


class NotFoundError(ProxyError):
    code = "not_found"
    status = 404
    openai_type = "invalid_request_error"


class BlockedError(ProxyError):
    """The backend could not verify the enclave: the proxy refuses to send anything."""

    code = "enclave_not_verified"
    status = 403
    openai_type = "enclave_not_verified"


def error_body(message: str, error_type: str, code: str) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "code": code, "param": None}}


def to_openai(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """Map any exception to (HTTP status, OpenAI error body); unknown ones say nothing specific."""
    if isinstance(exc, ProxyError):
        return exc.status, error_body(str(exc), exc.openai_type, exc.code)
    if isinstance(exc, RequestSchemaError):
        return 400, error_body(str(exc), "invalid_request_error", exc.code)
    if isinstance(exc, AttestationError | AttestedVerificationError | ConfigError):
        return 403, error_body(str(exc), "enclave_not_verified", exc.code)
    if isinstance(exc, NitroLLMError):
        status = 503 if exc.retryable else 502
        return status, error_body(str(exc), "upstream_error", exc.code)
    return 500, error_body("the proxy failed unexpectedly; see its log", "server_error", "internal_error")
