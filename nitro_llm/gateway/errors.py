"""Errors the gateway answers with. They describe transport trouble only: the gateway never holds
plaintext, so it has none to leak, and it still keeps messages content-free by construction."""

from __future__ import annotations

from fastapi.responses import JSONResponse

from nitro_llm.errors import ConfigError, NitroLLMError


class GatewayError(NitroLLMError):
    code = "gateway_error"
    status_code = 500
    retry_after: int | None = None


def error_response(exc: GatewayError, *, close: bool = False) -> JSONResponse:
    """The HTTP answer for ``exc``: its wire form, Retry-After when it has one, the Bearer challenge
    on 401; ``close`` when the request body was never read (it must not be read and discarded)."""
    headers = {"Connection": "close"} if close else {}
    if exc.retry_after:
        headers["Retry-After"] = str(exc.retry_after)
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="nitro-llm"'
    return JSONResponse(exc.to_wire(), status_code=exc.status_code, headers=headers or None)


class EnclaveUnavailable(
    GatewayError, code="enclave_unavailable", retryable=True, status_code=503, retry_after=2
):
    """the enclave is starting or restarting; retry after a few seconds"""


class EnclaveTimeout(GatewayError, code="enclave_timeout", retryable=True, status_code=504, retry_after=5):
    """the enclave did not answer in time; retry, or raise the gateway's --enclave-timeout"""


class RequestTooLarge(GatewayError, code="request_too_large", status_code=413):
    """shorten the question or raise the gateway's --max-body-bytes"""


class BadRequest(GatewayError, code="bad_request", status_code=400):
    """send the sealed envelope produced by the nitro-llm client as the request body"""


# The enclave answered with a typed error frame; its code, message and hint are passed on as they are (they
# are content-free by the enclave's own rule).
class EnclaveRefused(GatewayError, code="enclave_refused", status_code=400):
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


class BadEnclaveReply(GatewayError, code="bad_enclave_reply", status_code=502):
    """the enclave answered with a frame of the wrong shape; check that gateway and enclave match"""


# The enclave refused a request because its bounded queue is full (its ``enclave_busy`` or
# ``replay_cache_full`` error frame), told apart so HTTP clients and load balancers can back off.
class EnclaveBusy(GatewayError, code="enclave_busy", retryable=True, status_code=429, retry_after=1):
    """the enclave is answering other requests; retry after the Retry-After delay"""


class CredentialsFileError(ConfigError, code="credentials_file_invalid"):
    """pass the enclave role's credentials file (local mode: enclave-role.json in the KMS emulator's
    state directory, written when it starts), or --imds on EC2"""


# The file holds other principals' secrets (the emulator's whole credentials.json, say).
class CredentialsFileTooBroad(CredentialsFileError, code="credentials_file_too_broad"):
    """give the gateway only the enclave role's credentials (the KMS emulator writes them alone to
    enclave-role.json); never the data owner's or an admin's keys"""
