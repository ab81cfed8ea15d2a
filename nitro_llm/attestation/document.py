"""The Nitro attestation document: its schema, parsing untrusted bytes, and encoding it like the NSM.

Parsing is strict and total: any input either becomes an ``AttestationDocument`` whose every field has
the type and size AWS specifies, or raises ``SchemaError``. Nothing downstream (chain, policy, CLI)
then has to defend against a PCR of the wrong length or a certificate that is not DER. Parsing proves
nothing about authenticity; only ``verify_document`` does.

Limits follow AWS's document specification (``cert = bytes .size (1..1024)``,
``user_data = bytes .size (0..1024)``, PCR indices 0-31) and the NSM's 12 KiB response buffer; the
32 KiB cap on the whole document bounds the work an attacker can cause before the signature check.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

import cbor2
from cryptography import x509

from nitro_llm import cbor_strict
from nitro_llm.attestation.cose import COSE_SIGN1_TAG, CoseSign1, cose_from_decoded
from nitro_llm.attestation.errors import SchemaError

MAX_DOCUMENT_SIZE = 32 * 1024
MAX_CERT_SIZE = 1024
MAX_USER_FIELD_SIZE = 1024
MAX_CABUNDLE = 8
MAX_MODULE_ID = 256
PCR_COUNT_LIMIT = 32
PCR_LENGTH = 48  # SHA-384, the only digest the NSM uses
DIGEST = "SHA384"

#: Field order of the NSM's payload map; emulated documents must match it byte for byte.
FIELD_ORDER = (
    "module_id",
    "digest",
    "timestamp",
    "pcrs",
    "certificate",
    "cabundle",
    "public_key",
    "user_data",
    "nonce",
)
_REQUIRED = frozenset(FIELD_ORDER[:6])
_OPTIONAL = ("public_key", "user_data", "nonce")


@dataclass(frozen=True, eq=False)
class AttestationDocument:
    """A parsed (not yet verified) attestation document.

    ``cabundle`` is root first, as the NSM sends it; ``leaf`` and ``chain`` are the parsed forms of
    ``certificate`` and ``cabundle``. ``cose`` keeps the exact signed bytes for verification.
    """

    module_id: str
    digest: str
    timestamp: int  # milliseconds since the Unix epoch, UTC
    pcrs: dict[int, bytes]
    certificate: bytes
    cabundle: list[bytes]
    public_key: bytes | None
    user_data: bytes | None
    nonce: bytes | None
    cose: CoseSign1 = field(repr=False)
    leaf: x509.Certificate = field(repr=False)
    chain: list[x509.Certificate] = field(repr=False)

    @property
    def issued_at(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.timestamp / 1000, dt.UTC)

    @property
    def is_debug(self) -> bool:
        """True when PCR0, PCR1 and PCR2 are all zero: how the NSM reports a debug-mode enclave."""
        return all(i in self.pcrs and not any(self.pcrs[i]) for i in (0, 1, 2))

    def to_json(self) -> dict[str, object]:
        """A JSON-ready view for people and tools; bytes as hex, times as ISO 8601 UTC."""

        def opt(value: bytes | None) -> str | None:
            return None if value is None else value.hex()

        return {
            "module_id": self.module_id,
            "digest": self.digest,
            "timestamp": self.timestamp,
            "issued_at": self.issued_at.isoformat(timespec="milliseconds"),
            "debug_mode": self.is_debug,
            "pcrs": {str(i): v.hex() for i, v in sorted(self.pcrs.items())},
            "certificate": _cert_json(self.leaf),
            "cabundle": [_cert_json(c) for c in self.chain],
            "public_key": opt(self.public_key),
            "user_data": opt(self.user_data),
            "nonce": opt(self.nonce),
            "cose_tagged": self.cose.tagged,
        }


def _cert_json(cert: x509.Certificate) -> dict[str, str]:
    return {
        "subject": cert.subject.rfc4514_string(),
        "issuer": cert.issuer.rfc4514_string(),
        "not_before": cert.not_valid_before_utc.isoformat(),
        "not_after": cert.not_valid_after_utc.isoformat(),
        "serial": format(cert.serial_number, "x"),
    }


def parse_document(data: bytes) -> AttestationDocument:
    """Parse a COSE_Sign1 (tagged or untagged) Nitro attestation document; raise ``SchemaError``."""
    outer = cbor_strict.decode(
        data,
        what="attestation document",
        error=SchemaError,
        max_size=MAX_DOCUMENT_SIZE,
        max_depth=4,
        outer_tag=COSE_SIGN1_TAG,
    )
    cose = cose_from_decoded(outer)
    payload = cbor_strict.decode(
        cose.payload, what="document payload", error=SchemaError, max_size=MAX_DOCUMENT_SIZE, max_depth=4
    )
    return _document_from_payload(payload, cose)


def _document_from_payload(payload: object, cose: CoseSign1) -> AttestationDocument:
    if not isinstance(payload, dict):
        raise SchemaError("the document payload must be a CBOR map")
    for key in payload:
        if type(key) is not str:
            raise SchemaError("document payload keys must be text strings")
    unknown = sorted(set(payload) - set(FIELD_ORDER))
    if unknown:
        raise SchemaError(f"unknown field(s) in the document payload: {', '.join(k[:32] for k in unknown)}")
    missing = [k for k in FIELD_ORDER if k in _REQUIRED and k not in payload]
    if missing:
        raise SchemaError(f"missing required field(s): {', '.join(missing)}")

    module_id = payload["module_id"]
    if type(module_id) is not str or not 0 < len(module_id) <= MAX_MODULE_ID:
        raise SchemaError(f"module_id must be a non-empty text string of at most {MAX_MODULE_ID} characters")
    if type(payload["digest"]) is not str or payload["digest"] != DIGEST:
        raise SchemaError('digest must be "SHA384", the only digest the NSM uses')
    timestamp = payload["timestamp"]
    if type(timestamp) is not int or not 0 < timestamp < 2**64:
        raise SchemaError("timestamp must be a positive integer (milliseconds since the epoch)")
    if timestamp > 253402300799999:  # 9999-12-31T23:59:59.999Z: beyond datetime's range
        raise SchemaError("timestamp is past the year 9999")

    pcrs = _pcrs(payload["pcrs"])
    certificate = _cert_bytes(payload["certificate"], "certificate")
    cabundle_raw = payload["cabundle"]
    if not isinstance(cabundle_raw, list) or not 0 < len(cabundle_raw) <= MAX_CABUNDLE:
        raise SchemaError(f"cabundle must be an array of 1 to {MAX_CABUNDLE} certificates")
    cabundle = [_cert_bytes(c, f"cabundle[{i}]") for i, c in enumerate(cabundle_raw)]
    optional = {}
    for name in _OPTIONAL:
        value = payload.get(name)
        if value is not None and (type(value) is not bytes or len(value) > MAX_USER_FIELD_SIZE):
            raise SchemaError(f"{name} must be null or a byte string of at most {MAX_USER_FIELD_SIZE} bytes")
        optional[name] = value

    return AttestationDocument(
        module_id=module_id,
        digest=DIGEST,
        timestamp=timestamp,
        pcrs=pcrs,
        certificate=certificate,
        cabundle=cabundle,
        public_key=optional["public_key"],
        user_data=optional["user_data"],
        nonce=optional["nonce"],
        cose=cose,
        leaf=_load_cert(certificate, "certificate"),
        chain=[_load_cert(c, f"cabundle[{i}]") for i, c in enumerate(cabundle)],
    )


def _pcrs(value: object) -> dict[int, bytes]:
    if not isinstance(value, dict) or not 0 < len(value) <= PCR_COUNT_LIMIT:
        raise SchemaError(f"pcrs must be a map of 1 to {PCR_COUNT_LIMIT} registers")
    pcrs: dict[int, bytes] = {}
    for index, pcr in value.items():
        if type(index) is not int or not 0 <= index < PCR_COUNT_LIMIT:
            raise SchemaError(f"PCR indices must be integers 0-{PCR_COUNT_LIMIT - 1}")
        if type(pcr) is not bytes or len(pcr) != PCR_LENGTH:
            raise SchemaError(f"PCR{index} must be {PCR_LENGTH} bytes (SHA-384)")
        pcrs[index] = pcr
    return pcrs


def _cert_bytes(value: object, name: str) -> bytes:
    if type(value) is not bytes or not 0 < len(value) <= MAX_CERT_SIZE:
        raise SchemaError(f"{name} must be a DER certificate of 1 to {MAX_CERT_SIZE} bytes")
    return value


def _load_cert(der: bytes, name: str) -> x509.Certificate:
    """Parse a certificate and every field the checks read: pyca parses fields lazily, so a malformed
    name or extension would otherwise surface later as a ValueError in the middle of a check."""
    try:
        cert = x509.load_der_x509_certificate(der)
        _ = (cert.subject, cert.issuer, cert.serial_number, cert.signature_algorithm_oid)
        _ = (cert.not_valid_before_utc, cert.not_valid_after_utc, cert.extensions, cert.public_key())
    except Exception:
        raise SchemaError(f"{name} is not a well-formed DER X.509 certificate") from None
    return cert


def encode_payload(
    *,
    module_id: str,
    timestamp: int,
    pcrs: dict[int, bytes],
    certificate: bytes,
    cabundle: list[bytes],
    public_key: bytes | None,
    user_data: bytes | None,
    nonce: bytes | None,
) -> bytes:
    """Encode a payload map in the NSM's field order, absent optional fields as null, PCRs by index."""
    payload = {
        "module_id": module_id,
        "digest": DIGEST,
        "timestamp": timestamp,
        "pcrs": {i: pcrs[i] for i in sorted(pcrs)},
        "certificate": certificate,
        "cabundle": list(cabundle),
        "public_key": public_key,
        "user_data": user_data,
        "nonce": nonce,
    }
    return cbor2.dumps(payload)
