"""Errors the gateway answers with. They describe transport trouble only: the gateway never holds
plaintext, so it has none to leak, and it still keeps messages content-free by construction."""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError


class GatewayError(NitroLLMError):
    code = "gateway_error"
    status_code = 500
    retry_after: int | None = None


class EnclaveUnavailable(GatewayError):
    code = "enclave_unavailable"
    status_code = 503
    retryable = True
    retry_after = 2
    default_hint = "the enclave is starting or restarting; retry after a few seconds"


class EnclaveTimeout(GatewayError):
    code = "enclave_timeout"
    status_code = 504
    retryable = True
    retry_after = 5
    default_hint = "the enclave did not answer in time; retry, or raise the gateway's --enclave-timeout"


class RequestTooLarge(GatewayError):
    code = "request_too_large"
    status_code = 413
    default_hint = "shorten the question or raise the gateway's --max-body-bytes"


class BadRequest(GatewayError):
    code = "bad_request"
    status_code = 400
    default_hint = "send the sealed envelope produced by the nitro-llm client as the request body"


class EnclaveRefused(GatewayError):
    """The enclave answered with a typed error frame; its code, message and hint are passed on as they
    are (they are content-free by the enclave's own rule)."""

    code = "enclave_refused"
    status_code = 400

    @classmethod
    def from_frame(cls, frame: dict[str, object]) -> EnclaveRefused:
        error = cls(
            str(frame.get("message", "the enclave refused the request")), hint=str(frame.get("hint", ""))
        )
        error.code = str(frame.get("code", cls.code))
        error.retryable = bool(frame.get("retryable", False))
        error.status_code = 503 if error.retryable else 400
        error.retry_after = 2 if error.retryable else None
        return error


class BadEnclaveReply(GatewayError):
    code = "bad_enclave_reply"
    status_code = 502
    default_hint = (
        "the enclave answered with a frame of the wrong shape; check that gateway and enclave match"
    )


class EnclaveBusy(GatewayError):
    """The enclave refused a request because its bounded queue is full (its ``enclave_busy`` or
    ``replay_cache_full`` error frame), told apart so HTTP clients and load balancers can back off."""

    code = "enclave_busy"
    status_code = 429
    retryable = True
    retry_after = 1
    default_hint = "the enclave is answering other requests; retry after the Retry-After delay"
