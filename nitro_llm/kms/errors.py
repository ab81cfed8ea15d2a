"""Errors of the KMS side: CMS parsing, key policies, the emulator's set-up, and KMS API faults.

Two families live here. ``CmsError`` and ``PolicyError`` are library errors raised to our own callers
(the enclave opening a ``CiphertextForRecipient``, an operator building a key policy). ``KmsApiError``
subclasses are the faults the emulator returns on the wire: each carries the exception name and HTTP
status AWS KMS uses, so boto3 raises the same ``client.exceptions.<Name>`` against the emulator as
against AWS. No message here ever holds key material, plaintext, a data key or a secret.
"""

from __future__ import annotations

from nitro_llm.errors import ConfigError, NitroLLMError


# A CMS EnvelopedData blob could not be opened. One class and a handful of fixed messages on purpose:
# telling a caller *which* step failed (OAEP unwrap versus CBC padding) would hand an attacker a padding
# oracle.
class CmsError(NitroLLMError, code="cms_invalid"):
    """pass the exact CiphertextForRecipient bytes KMS returned, and the private key whose public half was in
    the attestation document"""


# A key policy is not a document the evaluator accepts (shape, operator, principal).
class PolicyError(NitroLLMError, code="policy_invalid"):
    """fix the policy JSON: see nitro_llm.kms.policy_eval for the supported elements"""


# The emulator or a KMS client was set up with something unusable.
class KmsConfigError(ConfigError, code="kms_config"):
    pass


# The emulator's state directory cannot be used (locked by another emulator, unreadable, corrupt).
class EmulatorStateError(NitroLLMError, code="kms_state"):
    """stop the other emulator using this --state-dir, or point --state-dir somewhere else"""


# A fault the emulator answers on the wire as ``{"__type": aws_type, "message": ...}``. ``aws_type`` and
# ``status`` are AWS's exception name and HTTP status for the same situation: they are part of the
# emulation, not free choices.
class KmsApiError(NitroLLMError):
    code = "kms_api_error"
    aws_type: str = "KMSInternalException"
    status: int = 500

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)


class KmsInternalError(KmsApiError):
    aws_type = "KMSInternalException"
    status = 500
    retryable = True


class AccessDenied(KmsApiError):
    aws_type = "AccessDeniedException"
    status = 400


class NotFound(KmsApiError):
    aws_type = "NotFoundException"
    status = 400


class InvalidCiphertext(KmsApiError):
    aws_type = "InvalidCiphertextException"
    status = 400


class IncorrectKey(KmsApiError):
    aws_type = "IncorrectKeyException"
    status = 400


class InvalidKeyUsage(KmsApiError):
    aws_type = "InvalidKeyUsageException"
    status = 400


class ValidationFailed(KmsApiError):
    aws_type = "ValidationException"
    status = 400


class Disabled(KmsApiError):
    aws_type = "DisabledException"
    status = 400


class InvalidState(KmsApiError):
    aws_type = "KMSInvalidStateException"
    status = 400


class MalformedPolicyDocument(KmsApiError):
    aws_type = "MalformedPolicyDocumentException"
    status = 400


class AlreadyExists(KmsApiError):
    aws_type = "AlreadyExistsException"
    status = 400


class InvalidAliasName(KmsApiError):
    aws_type = "InvalidAliasNameException"
    status = 400


class InvalidMarker(KmsApiError):
    aws_type = "InvalidMarkerException"
    status = 400


class UnsupportedOperation(KmsApiError):
    aws_type = "UnsupportedOperationException"
    status = 400


class DryRunOperation(KmsApiError):
    aws_type = "DryRunOperationException"
    status = 412


class UnknownOperation(KmsApiError):
    aws_type = "UnknownOperationException"
    status = 400


class SerializationFailed(KmsApiError):
    aws_type = "SerializationException"
    status = 400


class MissingAuthenticationToken(KmsApiError):
    aws_type = "MissingAuthenticationTokenException"
    status = 400


class IncompleteSignature(KmsApiError):
    aws_type = "IncompleteSignatureException"
    status = 400


class InvalidSignature(KmsApiError):
    aws_type = "InvalidSignatureException"
    status = 400


class UnrecognizedClient(KmsApiError):
    aws_type = "UnrecognizedClientException"
    status = 400


class ExpiredToken(KmsApiError):
    aws_type = "ExpiredTokenException"
    status = 400
