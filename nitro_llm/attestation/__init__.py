"""Attestation: is the party holding the key really our enclave, running our code and our model?

The public surface is this module plus ``nsm`` (talk to an NSM), ``devca`` (local mode's CA),
``measure`` (what PCR0-2 of the emulated enclave are) and ``pcr`` (Nitro PCR arithmetic). Verifying:

    report = verify_document(doc_bytes, policy=VerificationPolicy(expected_pcrs={0: pcr0}, nonce=n))

raises a typed ``AttestationError`` (``ChainError``, ``ExpiredError``, ``PcrMismatchError``, ...) on
the first failed check, and otherwise returns a ``VerificationReport`` listing every check.
"""

from nitro_llm.attestation.document import AttestationDocument, parse_document
from nitro_llm.attestation.errors import (
    AttestationError,
    ChainError,
    DebugModeError,
    DevCAError,
    ExpiredError,
    MeasurementError,
    NonceMismatchError,
    NsmError,
    NsmUnavailableError,
    PcrMismatchError,
    PolicyError,
    PublicKeyMismatchError,
    SchemaError,
    SignatureError,
    StaleDocumentError,
    TrustRootError,
    UntrustedRootError,
    UserDataMismatchError,
)
from nitro_llm.attestation.policy import VerificationPolicy
from nitro_llm.attestation.report import CheckResult, VerificationReport
from nitro_llm.attestation.trust import aws_nitro_root, load_root_pem
from nitro_llm.attestation.verify import document_time, verify_document

__all__ = [
    "AttestationDocument",
    "AttestationError",
    "ChainError",
    "CheckResult",
    "DebugModeError",
    "DevCAError",
    "ExpiredError",
    "MeasurementError",
    "NonceMismatchError",
    "NsmError",
    "NsmUnavailableError",
    "PcrMismatchError",
    "PolicyError",
    "PublicKeyMismatchError",
    "SchemaError",
    "SignatureError",
    "StaleDocumentError",
    "TrustRootError",
    "UntrustedRootError",
    "UserDataMismatchError",
    "VerificationPolicy",
    "VerificationReport",
    "aws_nitro_root",
    "document_time",
    "load_root_pem",
    "parse_document",
    "verify_document",
]
