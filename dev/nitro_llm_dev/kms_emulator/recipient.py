"""The ``Recipient`` parameter: verify the attestation document and learn what the policy may test.

As AWS KMS does, the emulator first checks that the document is authentic (COSE signature, chain to
a trusted root, certificates valid now, recent) and refuses it with ``ValidationException``
otherwise. A debug-mode document is authentic too (AWS signs those), so it is not refused here: its
all-zero PCRs become condition values and the key policy, which names the real PCRs, denies it.
The document's RSA public key is what the answer is then encrypted to.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_der_public_key

from nitro_llm.kms.errors import ValidationFailed

log = logging.getLogger(__name__)

KEY_ENCRYPTION_ALGORITHM = "RSAES_OAEP_SHA_256"
MAX_DOCUMENT_AGE = dt.timedelta(minutes=5)
CONDITION_PCRS = range(9)  # KMS offers kms:RecipientAttestation:PCR0 .. PCR8
_MIN_BITS, _MAX_BITS = 2048, 4096
_INVALID_DOCUMENT = "The attestation document is not valid."


@dataclass(frozen=True)
class AttestedRecipient:
    """What a verified document contributes: the key to encrypt to, and condition-key values."""

    public_key: rsa.RSAPublicKey
    conditions: dict[str, str]
    debug: bool
    module_id: str

    @property
    def pcr0(self) -> str:
        return self.conditions.get("kms:RecipientAttestation:PCR0", "")


class RecipientVerifier:
    """Verifies ``Recipient`` parameters against the emulator's trust roots (``None``: AWS root)."""

    def __init__(
        self, roots: list[x509.Certificate] | None, *, max_age: dt.timedelta = MAX_DOCUMENT_AGE
    ) -> None:
        self.roots = roots
        self.max_age = max_age

    def verify(self, recipient: Any) -> AttestedRecipient:
        from nitro_llm.attestation import AttestationError, VerificationPolicy, verify_document

        document_bytes = _parse_parameter(recipient)
        policy = VerificationPolicy(expected_pcrs={}, allow_debug=True, max_age=self.max_age)
        try:
            report = verify_document(document_bytes, roots=self.roots, policy=policy)
        except AttestationError as exc:
            log.info("recipient attestation refused: %s (%s)", exc.code, exc.message)
            raise ValidationFailed(_INVALID_DOCUMENT, hint=exc.hint) from None
        document = report.document
        if document is None:  # verify_document raises instead, but never trust a None here
            raise ValidationFailed(_INVALID_DOCUMENT)
        public_key = _recipient_key(document.public_key)
        conditions = {
            f"kms:RecipientAttestation:PCR{index}": document.pcrs[index].hex()
            for index in CONDITION_PCRS
            if index in document.pcrs
        }
        if 0 in document.pcrs:
            conditions["kms:RecipientAttestation:ImageSha384"] = document.pcrs[0].hex()
        return AttestedRecipient(
            public_key=public_key,
            conditions=conditions,
            debug=document.is_debug,
            module_id=document.module_id,
        )


def _parse_parameter(recipient: Any) -> bytes:
    if not isinstance(recipient, Mapping):
        raise ValidationFailed(
            "Recipient must be an object with KeyEncryptionAlgorithm and AttestationDocument."
        )
    algorithm = recipient.get("KeyEncryptionAlgorithm", KEY_ENCRYPTION_ALGORITHM)
    if algorithm != KEY_ENCRYPTION_ALGORITHM:
        raise ValidationFailed(
            f"1 validation error detected: Value at 'recipient.keyEncryptionAlgorithm' failed to satisfy "
            f"constraint: Member must satisfy enum value set: [{KEY_ENCRYPTION_ALGORITHM}]"
        )
    encoded = recipient.get("AttestationDocument")
    if not isinstance(encoded, str) or not encoded:
        raise ValidationFailed("Recipient.AttestationDocument is required.")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ValidationFailed(_INVALID_DOCUMENT) from None


def _recipient_key(der: bytes | None) -> rsa.RSAPublicKey:
    if not der:
        raise ValidationFailed(
            _INVALID_DOCUMENT, hint="the attestation document must carry the recipient's public key"
        )
    try:
        key = load_der_public_key(der)
    except (ValueError, TypeError):
        raise ValidationFailed(
            _INVALID_DOCUMENT, hint="public_key must be a DER SubjectPublicKeyInfo of an RSA key"
        ) from None
    if not isinstance(key, rsa.RSAPublicKey) or not _MIN_BITS <= key.key_size <= _MAX_BITS:
        raise ValidationFailed(_INVALID_DOCUMENT, hint="public_key must be an RSA key of 2048 to 4096 bits")
    return key
