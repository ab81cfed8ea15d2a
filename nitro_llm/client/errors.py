"""Errors the client raises. The client owns the plaintext, but its errors still carry none: they
end up in terminals, logs and bug reports."""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError


class ClientError(NitroLLMError, code="client_error"):
    pass


class GatewayUnreachable(ClientError, code="gateway_unreachable", retryable=True):
    """is the stack running? start it with 'nitro-llm up' (or run 'nitro-llm demo')"""


# The gateway or the enclave refused the request with a typed error.
class ServiceRefusedError(ClientError):
    def __init__(self, code: str, message: str, hint: str = "", retryable: bool = False) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.retryable = retryable


class NoLocalStack(ClientError, code="no_local_stack"):
    """start the local stack with 'nitro-llm up' in another terminal, or pass --gateway/--kms-endpoint"""


# ``--policy`` names no file. Never a reason to fall back to the kms protocol: the user asked for their own
# check of the enclave, and a typo must not silently drop it.
class PolicyNotFound(ClientError, code="client_policy_missing"):
    """check the --policy path; to let the KMS key policy check the enclave instead, pass --protocol kms
    without --policy"""


# The client's own KMS call (GenerateDataKey) got no answer: nothing was sent to the gateway.
class KmsUnreachable(ClientError, code="client_kms_unreachable", retryable=True):
    """KMS did not answer this machine; check the KMS endpoint and network, then retry"""


class KmsRefused(ClientError, code="client_kms_refused"):
    """KMS refused this client's GenerateDataKey: check its credentials and the key policy"""
