"""The EIF signature section and PCR8, the way nitro-cli writes and checks them.

A signed EIF lets a key policy pin the signer (PCR8) instead of every build's PCR0. The bytes
follow the Rust sources exactly, because ``describe-eif`` and the enclave tooling parse them:

- aws-nitro-enclaves-image-format ``src/defs/mod.rs``: the section is an ``EifSignature``, a
  ``Vec<PcrSignature>``; ``PcrSignature { signing_certificate: Vec<u8>, signature: Vec<u8> }`` holds
  the certificate file's PEM bytes as given and a serialized COSE_Sign1; its payload is a
  ``PcrInfo { register_index: i32, register_value: Vec<u8> }``. Both are written with
  ``serde_cbor::to_vec``: a struct becomes a CBOR map keyed by field name, in declaration order, and
  a ``Vec<u8>`` becomes an array of small unsigned integers, not a byte string.
- ``src/utils/eif_signer.rs`` ``generate_eif_signature``: one ``PcrSignature``, over PCR0 only
  (register_index 0, register_value the 48 PCR0 bytes).
- aws-nitro-enclaves-cose ``src/sign.rs`` ``CoseSign1::new`` / ``as_bytes(false)``: untagged
  ``[protected, unprotected, payload, signature]`` with protected ``{1: alg}``, unprotected ``{}``,
  the signed bytes ``["Signature1", protected, h'', payload]``; ``src/crypto/openssl_pkey.rs``
  ``ec_curve_to_parameters``: P-256 -> ES256 (-7, SHA-256), P-384 -> ES384 (-35, SHA-384), P-521 ->
  ES512 (-36, SHA-512), the signature raw ``r || s`` each padded to 32, 48 or 66 bytes.
- ``src/utils/eif_reader.rs``: PCR8 extends a zero register with SHA-384 of the certificate's DER
  (``cert.to_der()`` of the PEM in the first ``PcrSignature``); ``get_certificate_info`` verifies the
  COSE signature with the certificate's key (a bad signature fails ``describe-eif``) and reports
  ``SignatureCheck`` = whether the payload equals the PcrInfo of the measured PCR0.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

import cbor2
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from nitro_llm import cbor_strict
from nitro_llm.attestation.cose import COSE_SIGN1_TAG
from nitro_llm.attestation.errors import SchemaError
from nitro_llm.attestation.pcr import ZERO_PCR, extend
from nitro_llm.image.eif_format import EifSignatureError


@dataclass(frozen=True, slots=True)
class _Alg:
    cose_id: int
    curve: str
    hash: type[hashes.HashAlgorithm]
    coordinate: int


_BY_CURVE = {
    "secp256r1": _Alg(-7, "secp256r1", hashes.SHA256, 32),
    "secp384r1": _Alg(-35, "secp384r1", hashes.SHA384, 48),
    "secp521r1": _Alg(-36, "secp521r1", hashes.SHA512, 66),
}
_BY_ID = {alg.cose_id: alg for alg in _BY_CURVE.values()}


@dataclass(frozen=True, slots=True)
class PcrSignature:
    certificate_pem: bytes
    cose_sign1: bytes


def pcr_info(register_index: int, register_value: bytes) -> bytes:
    """The COSE payload: serde_cbor's encoding of ``PcrInfo``."""
    return cbor2.dumps({"register_index": register_index, "register_value": list(register_value)})


def signature_section(certificate_pem: bytes, private_key: ec.EllipticCurvePrivateKey, pcr0: bytes) -> bytes:
    """The bytes of the signature section for an image whose PCR0 is ``pcr0``."""
    cose = sign_cose(private_key, pcr_info(0, pcr0))
    entry = {"signing_certificate": list(certificate_pem), "signature": list(cose)}
    return cbor2.dumps([entry])


def sign_cose(private_key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    alg = _BY_CURVE.get(private_key.curve.name)
    if alg is None:
        raise EifSignatureError(
            f"signing key curve {private_key.curve.name} is not one nitro-cli signs with",
            hint="use an ECDSA P-384 key (P-256 and P-521 also work)",
        )
    protected = cbor2.dumps({1: alg.cose_id})
    der = private_key.sign(_sig_structure(protected, payload), ec.ECDSA(alg.hash()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(alg.coordinate, "big") + s.to_bytes(alg.coordinate, "big")
    return cbor2.dumps([protected, {}, payload, signature])


def parse_signature_section(data: bytes) -> list[PcrSignature]:
    value = _decode(data, "EIF signature section")
    if not isinstance(value, list) or not value:
        raise EifSignatureError("the signature section must be a non-empty CBOR array of PCR signatures")
    return [_pcr_signature(item) for item in value]


def load_certificate(pem: bytes) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError:
        raise EifSignatureError("the signing certificate is not a PEM X.509 certificate") from None


def pcr8(certificate: x509.Certificate) -> bytes:
    """PCR8 of an image signed with ``certificate``: what ``nitro-cli pcr --signing-certificate`` prints."""
    der = certificate.public_bytes(serialization.Encoding.DER)
    return extend(ZERO_PCR, hashlib.sha384(der).digest())


def verify_pcr0_signature(signature: PcrSignature, pcr0: bytes) -> bool:
    """Raise unless the COSE signature verifies with its certificate; say whether it signs ``pcr0``."""
    certificate = load_certificate(signature.certificate_pem)
    protected, payload, raw = _cose_parts(signature.cose_sign1)
    header = _decode(protected, "COSE protected header") if protected else {}
    alg_id = header.get(1) if isinstance(header, Mapping) else None
    alg = _BY_ID.get(alg_id) if type(alg_id) is int else None
    if alg is None:
        raise EifSignatureError("the COSE_Sign1 protected header names no ECDSA algorithm nitro-cli uses")
    public_key = certificate.public_key()
    if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != alg.curve:
        raise EifSignatureError(f"the signing certificate's key does not match COSE algorithm {alg.cose_id}")
    if len(raw) != 2 * alg.coordinate:
        raise EifSignatureError(f"the COSE signature is {len(raw)} bytes, expected {2 * alg.coordinate}")
    r = int.from_bytes(raw[: alg.coordinate], "big")
    s = int.from_bytes(raw[alg.coordinate :], "big")
    try:
        public_key.verify(
            encode_dss_signature(r, s), _sig_structure(protected, payload), ec.ECDSA(alg.hash())
        )
    except InvalidSignature:
        raise EifSignatureError("the EIF signature does not verify with its signing certificate") from None
    return payload == pcr_info(0, pcr0)


def check_signing_pair(certificate: x509.Certificate, private_key: ec.EllipticCurvePrivateKey) -> None:
    """nitro-cli does not check this; an EIF signed with another key fails every later describe."""
    mine = private_key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    theirs = certificate.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    if mine != theirs:
        raise EifSignatureError(
            "the private key does not belong to the signing certificate",
            hint="pass the certificate issued for this key",
        )


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def _cose_parts(data: bytes) -> tuple[bytes, bytes, bytes]:
    value = _decode(data, "COSE_Sign1")
    if isinstance(value, cbor2.CBORTag):
        value = value.value  # CoseSign1::from_bytes accepts tag 18 as well as none
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise EifSignatureError("a COSE_Sign1 is an array of 4 items")
    protected, unprotected, payload, signature = value
    if not (type(protected) is bytes and type(payload) is bytes and type(signature) is bytes):
        raise EifSignatureError("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):
        raise EifSignatureError("the COSE_Sign1 unprotected header must be a map")
    return protected, payload, signature


def _pcr_signature(item: object) -> PcrSignature:
    if not isinstance(item, Mapping) or set(item) != {"signing_certificate", "signature"}:
        raise EifSignatureError("a PCR signature is a map of signing_certificate and signature")
    return PcrSignature(_byte_array(item["signing_certificate"]), _byte_array(item["signature"]))


def _byte_array(value: object) -> bytes:
    """serde's ``Vec<u8>``: an array of integers 0..255 (a byte string is accepted too)."""
    if type(value) is bytes:
        return value
    if not isinstance(value, list | tuple) or not all(type(b) is int and 0 <= b <= 255 for b in value):
        raise EifSignatureError("a byte field of the signature section is not an array of bytes")
    return bytes(value)


def _decode(data: bytes, what: str) -> object:
    try:
        value = cbor_strict.decode(
            data,
            what=what,
            error=SchemaError,
            max_size=max(len(data), 1),
            max_depth=8,
            outer_tag=COSE_SIGN1_TAG,
        )
    except SchemaError as exc:
        raise EifSignatureError(exc.message) from None
    if isinstance(value, cbor2.CBORTag) and value.tag != COSE_SIGN1_TAG:
        raise EifSignatureError(f"unexpected CBOR tag {value.tag} in {what}")
    return value


#: OpenSSL long names (``OBJ_obj2txt``), which nitro-cli prints for issuer attributes and algorithms.
_OID_NAMES = {
    "2.5.4.3": "commonName",
    "2.5.4.4": "surname",
    "2.5.4.5": "serialNumber",
    "2.5.4.6": "countryName",
    "2.5.4.7": "localityName",
    "2.5.4.8": "stateOrProvinceName",
    "2.5.4.9": "streetAddress",
    "2.5.4.10": "organizationName",
    "2.5.4.11": "organizationalUnitName",
    "2.5.4.12": "title",
    "2.5.4.17": "postalCode",
    "2.5.4.42": "givenName",
    "2.5.4.43": "initials",
    "2.5.4.46": "dnQualifier",
    "2.5.4.97": "organizationIdentifier",
    "1.2.840.113549.1.9.1": "emailAddress",
    "0.9.2342.19200300.100.1.1": "userId",
    "0.9.2342.19200300.100.1.25": "domainComponent",
    "1.2.840.10045.4.3.2": "ecdsa-with-SHA256",
    "1.2.840.10045.4.3.3": "ecdsa-with-SHA384",
    "1.2.840.10045.4.3.4": "ecdsa-with-SHA512",
    "1.2.840.113549.1.1.11": "sha256WithRSAEncryption",
    "1.2.840.113549.1.1.12": "sha384WithRSAEncryption",
    "1.2.840.113549.1.1.13": "sha512WithRSAEncryption",
    "1.3.101.112": "ED25519",
}
_MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def certificate_info(certificate: x509.Certificate) -> dict[str, object]:
    """``SigningCertificate`` of describe-eif (``SignCertificateInfo`` in ``eif_reader.rs``).

    IssuerName maps each issuer attribute's long name to its value (a BTreeMap: sorted, the last
    duplicate wins); NotBefore / NotAfter use OpenSSL's ``ASN1_TIME_print`` form; Signature is the
    certificate's signature as uppercase hex pairs joined by ':'.
    """
    issuer: dict[str, str] = {}
    for attribute in certificate.issuer:
        name = _OID_NAMES.get(attribute.oid.dotted_string, attribute.oid.dotted_string)
        value = attribute.value
        issuer[name] = (value if isinstance(value, str) else value.hex()).replace('"', "")
    algorithm = certificate.signature_algorithm_oid.dotted_string
    return {
        "IssuerName": dict(sorted(issuer.items())),
        "Algorithm": _OID_NAMES.get(algorithm, algorithm),
        "NotBefore": _asn1_time(certificate.not_valid_before_utc),
        "NotAfter": _asn1_time(certificate.not_valid_after_utc),
        "Signature": ":".join(f"{byte:02X}" for byte in certificate.signature),
    }


def _asn1_time(moment: datetime) -> str:
    return (
        f"{_MONTHS[moment.month - 1]} {moment.day:2d} "
        f"{moment.hour:02d}:{moment.minute:02d}:{moment.second:02d} {moment.year} GMT"
    )
