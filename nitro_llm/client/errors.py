"""Errors the client raises. The client owns the plaintext, but its errors still carry none: they
end up in terminals, logs and bug reports."""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError


class ClientError(NitroLLMError):
    code = "client_error"


class GatewayUnreachable(ClientError):
    code = "gateway_unreachable"
    retryable = True
    default_hint = "is the stack running? start it with 'nitro-llm up' (or run 'nitro-llm demo')"


class RemoteError(ClientError):
    """The gateway or the enclave refused the request with a typed error."""

    def __init__(self, code: str, message: str, hint: str = "", retryable: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.retryable = retryable


class NoLocalStack(ClientError):
    code = "no_local_stack"
    default_hint = (
        "start the local stack with 'nitro-llm up' in another terminal, or pass --gateway/--kms-endpoint"
    )


class KmsUnreachable(ClientError):
    """The client's own KMS call (GenerateDataKey) got no answer: nothing was sent to the gateway."""

    code = "client_kms_unreachable"
    retryable = True
    default_hint = "KMS did not answer this machine; check the KMS endpoint and network, then retry"


class KmsRefused(ClientError):
    code = "client_kms_refused"
    default_hint = "KMS refused this client's GenerateDataKey: check its credentials and the key policy"
