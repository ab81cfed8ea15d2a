"""Errors of the attestation layer: one class per check that can fail, so callers branch on type.

A verifier that says only "invalid" sends people guessing; each class here names the check that
failed and its hint says what to do next. The KMS emulator, the enclave and the client all catch
``AttestationError`` and surface ``code`` on the wire, so codes are stable. Messages describe
documents (field names, sizes, certificate subjects, PCR indices) and never echo user_data, nonces or
key material beyond what the caller already holds: attestation documents are public, but the user
data a protocol binds into them may not be.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:
    from nitro_llm.attestation.report import VerificationReport


class AttestationError(NitroLLMError):
    """Base of every attestation failure.

    ``report`` is set by ``verify_document``: the checks that ran up to and including the failing one,
    so a person (or ``nitro-llm attest verify --json``) can see what passed before it stopped.
    """

    code = "attestation_invalid"
    default_hint = "run 'nitro-llm attest verify FILE --json' to see every check"
    check: str = "attestation"

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.report: VerificationReport | None = None


class SchemaError(AttestationError):
    """The bytes are not a well-formed Nitro attestation document (CBOR, COSE_Sign1 or payload schema)."""

    code = "attestation_schema"
    check = "schema"
    default_hint = "pass the raw COSE_Sign1 bytes the NSM returned (CBOR, not base64 or JSON)"


class SignatureError(AttestationError):
    """The COSE_Sign1 signature does not verify with the leaf certificate's key."""

    code = "attestation_signature"
    check = "cose.signature"
    default_hint = "the document was altered after signing or was not signed by its certificate: reject it"


class ChainError(AttestationError):
    """The certificate chain from the leaf through the cabundle does not lead to a pinned root."""

    code = "attestation_chain"
    check = "chain"
    default_hint = "the document was not issued by the trusted Nitro PKI: reject it"


class UntrustedRootError(ChainError):
    """The document's root is not one of the roots the caller pinned (e.g. a self-made root)."""

    code = "attestation_untrusted_root"
    check = "chain.root"
    default_hint = (
        "real enclaves chain to the AWS Nitro root; emulated (local mode) documents need the dev root "
        "passed explicitly with --root / roots=[...]"
    )


class ExpiredError(ChainError):
    """A certificate in the chain is not valid at the verification time (expired or not yet valid)."""

    code = "attestation_expired"
    check = "chain.validity"
    default_hint = (
        "leaf certificates live about 3 hours: ask the enclave for a fresh document, or verify a stored "
        "one at its own timestamp (--at document)"
    )


class PcrMismatchError(AttestationError):
    """A PCR differs from the expected value: the enclave runs different code, model or configuration."""

    code = "attestation_pcr_mismatch"
    check = "pcrs"
    default_hint = "compare with the PCRs of the image you built (nitro-llm attest pcr / attest measure)"


class DebugModeError(AttestationError):
    """PCR0-2 are all zero: the enclave runs in debug mode, where the host can read its memory."""

    code = "attestation_debug_mode"
    check = "debug_mode"
    default_hint = "run the enclave without --debug-mode; accept debug documents only for development"


class NonceMismatchError(AttestationError):
    """The document's nonce is not the one the verifier asked for (replayed or for someone else)."""

    code = "attestation_nonce_mismatch"
    check = "nonce"
    default_hint = "request a new document with a fresh nonce and verify it against that nonce"


class UserDataMismatchError(AttestationError):
    """The document's user_data is not the expected value."""

    code = "attestation_user_data_mismatch"
    check = "user_data"
    default_hint = "the enclave bound different data into its document: reject it"


class PublicKeyMismatchError(AttestationError):
    """The document's public_key is not the expected key."""

    code = "attestation_public_key_mismatch"
    check = "public_key"
    default_hint = "the enclave presented a different key than expected: reject it"


class StaleDocumentError(AttestationError):
    """The document is older than the maximum age, or dated in the future."""

    code = "attestation_stale"
    check = "freshness"
    default_hint = "request a fresh document (and check the clocks of both machines)"


class PolicyError(AttestationError):
    """The verification policy itself is unusable (bad PCR index or length, empty check list)."""

    code = "attestation_policy_invalid"
    check = "policy"
    default_hint = "expected PCRs are indices 0-31 with 48-byte SHA-384 values (96 hex digits)"


class TrustRootError(AttestationError):
    """A trust root could not be loaded, or the packaged AWS root does not match its pinned hash."""

    code = "attestation_trust_root"
    check = "trust_root"
    default_hint = "reinstall nitro-llm; pass a PEM file holding one CA certificate to --root"


class MeasurementError(AttestationError):
    """Enclave measurements could not be computed or read (missing model, bad config, bad JSON)."""

    code = "attestation_measurement"
    check = "measurement"
    default_hint = "check the paths and that the config is plain JSON data"


class DevCAError(AttestationError):
    """The local dev CA directory is unusable (partial, unreadable, or with unsafe permissions)."""

    code = "attestation_dev_ca"
    check = "dev_ca"
    default_hint = "delete the dev-ca directory under $NITRO_LLM_HOME to create a new dev CA"


class NsmError(AttestationError):
    """The NSM (device or emulated) refused a request or answered something unexpected."""

    code = "nsm_error"
    check = "nsm"
    default_hint = "check the request sizes (user_data, nonce, public_key at most 1024 bytes each)"


# There is no NSM device here: not running inside a Nitro Enclave.
class NsmUnavailableError(NsmError, code="nsm_unavailable"):
    """inside a Nitro Enclave /dev/nsm exists; on any other machine use open_nsm('emulated')"""
