"""CMS EnvelopedData as AWS KMS uses it for ``CiphertextForRecipient`` (RFC 5652, section 6).

KMS answers an attested request with a ContentInfo(id-envelopedData), version 2, BER with
indefinite lengths, one KeyTransRecipientInfo whose rid is a subject key identifier (SHA-256 of the
recipient's DER SubjectPublicKeyInfo), the content key wrapped with RSAES-OAEP (SHA-256, MGF1-SHA-256)
and the content encrypted with AES-256-CBC and PKCS#7 padding. ``cryptography``'s pkcs7 decryption
rejects these blobs, so they are parsed with asn1crypto here.

The enclave calls :func:`open_enveloped_data`; the emulator calls :func:`build_enveloped_data`, so
the emulator's answers go through the very code that opens AWS's. Every failure is a
:class:`CmsError` with one of a few fixed messages: which decryption step failed is never revealed
(that would be a padding oracle).
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from asn1crypto import algos, cms, core
from cryptography.hazmat.primitives import hashes, padding, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.padding import MGF1, OAEP
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from nitro_llm.kms.errors import CmsError

MAX_BLOB_BYTES = 1 << 20
"""KMS's answers are a few KiB (at most 4 KiB of plaintext); anything far larger is not one of them."""

_AES_BLOCK = 16
_CEK_BYTES = 32
_MIN_RSA_BITS = 2048

_MALFORMED = "the CMS EnvelopedData is malformed"
_UNDECRYPTABLE = "the CMS EnvelopedData could not be decrypted with this key"
_NO_RECIPIENT = "the CMS EnvelopedData has no recipient matching this key"
_UNSUPPORTED = "the CMS EnvelopedData uses an algorithm other than RSAES-OAEP-SHA256 with AES-256-CBC"

# What asn1crypto may raise on hostile input: none of it may escape as anything but CmsError.
_PARSE_FAILURES = (ValueError, TypeError, KeyError, IndexError, OverflowError, AttributeError, RecursionError)


@dataclass(frozen=True)
class KeyTransRecipient:
    """One KeyTransRecipientInfo: who it is for, and the wrapped content-encryption key."""

    subject_key_identifier: bytes | None
    issuer_der: bytes | None
    serial_number: int | None
    key_encryption_algorithm: str
    encrypted_key: bytes
    oaep_sha256: bool


@dataclass(frozen=True)
class EnvelopedData:
    """The parts of an EnvelopedData a recipient needs, lifted out of the ASN.1."""

    version: int
    recipients: tuple[KeyTransRecipient, ...]
    content_encryption_algorithm: str
    iv: bytes
    encrypted_content: bytes


def subject_key_identifier(public_key: rsa.RSAPublicKey) -> bytes:
    """SHA-256 of the DER SubjectPublicKeyInfo: how KMS names the recipient in ``rid``."""
    spki = public_key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return hashlib.sha256(spki).digest()


def parse_enveloped_data(ber: bytes) -> EnvelopedData:
    """Parse without decrypting: for checks and diagnostics that hold no private key."""
    if not isinstance(ber, bytes | bytearray | memoryview):
        raise CmsError(_MALFORMED, hint="pass the CMS blob as bytes (base64-decode it first)")
    data = bytes(ber)
    if not data or len(data) > MAX_BLOB_BYTES:
        raise CmsError(_MALFORMED)
    try:
        return _parse(data)
    except CmsError:
        raise
    except _PARSE_FAILURES:
        raise CmsError(_MALFORMED) from None


def _parse(data: bytes) -> EnvelopedData:
    info = cms.ContentInfo.load(data, strict=True)
    if info["content_type"].native != "enveloped_data":
        raise CmsError(_MALFORMED)
    env = info["content"]
    if not isinstance(env, cms.EnvelopedData):
        raise CmsError(_MALFORMED)
    version = int(env["version"].native[1:]) if isinstance(env["version"].native, str) else -1
    recipients: list[KeyTransRecipient] = []
    for choice in env["recipient_infos"]:
        if choice.name != "ktri":
            continue  # other recipient kinds (kari, kekri, pwri) are not KMS's and not ours
        recipients.append(_parse_ktri(choice.chosen))
    eci = env["encrypted_content_info"]
    if eci["content_type"].native != "data":
        raise CmsError(_MALFORMED)
    alg = eci["content_encryption_algorithm"]
    alg_name = alg["algorithm"].native
    iv = alg["parameters"].native if alg_name == "aes256_cbc" else b""
    content = eci["encrypted_content"].native
    if content is None:
        raise CmsError(_MALFORMED, hint="detached content is not supported: KMS always embeds it")
    if alg_name == "aes256_cbc" and (not isinstance(iv, bytes) or len(iv) != _AES_BLOCK):
        raise CmsError(_MALFORMED)
    return EnvelopedData(
        version=version,
        recipients=tuple(recipients),
        content_encryption_algorithm=str(alg_name),
        iv=bytes(iv),
        encrypted_content=bytes(content),
    )


def _parse_ktri(ktri: cms.KeyTransRecipientInfo) -> KeyTransRecipient:
    rid = ktri["rid"]
    ski: bytes | None = None
    issuer_der: bytes | None = None
    serial: int | None = None
    if rid.name == "subject_key_identifier":
        ski = bytes(rid.chosen.native)
    elif rid.name == "issuer_and_serial_number":
        issuer_der = rid.chosen["issuer"].dump()
        serial = int(rid.chosen["serial_number"].native)
    else:
        raise CmsError(_MALFORMED)
    alg = ktri["key_encryption_algorithm"]
    name = str(alg["algorithm"].native)
    return KeyTransRecipient(
        subject_key_identifier=ski,
        issuer_der=issuer_der,
        serial_number=serial,
        key_encryption_algorithm=name,
        encrypted_key=bytes(ktri["encrypted_key"].native),
        oaep_sha256=name == "rsaes_oaep" and _is_oaep_sha256(alg["parameters"]),
    )


def _is_oaep_sha256(params: algos.RSAESOAEPParams) -> bool:
    """KMS's parameters exactly: SHA-256, MGF1 over SHA-256, empty label."""
    native = params.native
    if not isinstance(native, dict):
        return False
    mgf = native.get("mask_gen_algorithm") or {}
    label = (native.get("p_source_algorithm") or {}).get("parameters")
    return (
        (native.get("hash_algorithm") or {}).get("algorithm") == "sha256"
        and mgf.get("algorithm") == "mgf1"
        and (mgf.get("parameters") or {}).get("algorithm") == "sha256"
        and label in (None, b"")
    )


def open_enveloped_data(
    ber: bytes, private_key: rsa.RSAPrivateKey, *, certificate_issuer_serial: tuple[bytes, int] | None = None
) -> bytes:
    """Decrypt a ``CiphertextForRecipient`` with the enclave's ephemeral RSA key.

    The recipient is found by subject key identifier (what KMS sends). An issuerAndSerialNumber
    recipient matches only if the caller names its certificate's (issuer DER, serial): a bare key
    has neither.
    """
    if not isinstance(private_key, rsa.RSAPrivateKey):
        raise CmsError(_UNDECRYPTABLE, hint="pass the RSA private key generated for the attestation document")
    env = parse_enveloped_data(ber)
    recipient = _find_recipient(env, private_key, certificate_issuer_serial)
    if not recipient.oaep_sha256 or env.content_encryption_algorithm != "aes256_cbc":
        raise CmsError(_UNSUPPORTED)
    return _decrypt(env, recipient, private_key)


def _find_recipient(
    env: EnvelopedData, private_key: rsa.RSAPrivateKey, issuer_serial: tuple[bytes, int] | None
) -> KeyTransRecipient:
    ski = subject_key_identifier(private_key.public_key())
    for recipient in env.recipients:
        if recipient.subject_key_identifier is not None and hmac.compare_digest(
            recipient.subject_key_identifier, ski
        ):
            return recipient
        if (
            issuer_serial is not None
            and recipient.issuer_der is not None
            and recipient.issuer_der == issuer_serial[0]
            and recipient.serial_number == issuer_serial[1]
        ):
            return recipient
    raise CmsError(_NO_RECIPIENT)


def _decrypt(env: EnvelopedData, recipient: KeyTransRecipient, private_key: rsa.RSAPrivateKey) -> bytes:
    """OAEP unwrap, then CBC and unpad; every failure reads the same from outside.

    A failed unwrap does not return early: the CBC step still runs, under a random key, so that an
    observer timing the enclave cannot tell an OAEP failure from a padding failure (the recipient key
    lives as long as the enclave process, so such an oracle could be queried many times).
    """
    content = env.encrypted_content
    if not content or len(content) % _AES_BLOCK:
        raise CmsError(_UNDECRYPTABLE)
    unwrapped = True
    try:
        cek = private_key.decrypt(recipient.encrypted_key, _oaep())
    except ValueError:
        cek, unwrapped = b"", False
    if len(cek) != _CEK_BYTES:
        cek, unwrapped = os.urandom(_CEK_BYTES), False
    decryptor = Cipher(algorithms.AES(cek), modes.CBC(env.iv)).decryptor()
    padded = decryptor.update(content) + decryptor.finalize()
    unpadder = padding.PKCS7(_AES_BLOCK * 8).unpadder()
    try:
        plaintext = unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        plaintext, unwrapped = b"", False
    if not unwrapped:
        raise CmsError(_UNDECRYPTABLE)
    return plaintext


def _oaep() -> OAEP:
    return OAEP(mgf=MGF1(algorithm=hashes.SHA256()), algorithm=hashes.SHA256(), label=None)


def build_enveloped_data(plaintext: bytes, recipient_public_key: rsa.RSAPublicKey) -> bytes:
    """Seal ``plaintext`` for the holder of ``recipient_public_key``, in the shape KMS uses.

    Fresh random content key and IV per call. DER is emitted (valid BER), so any BER reader,
    including :func:`open_enveloped_data`, reads it.
    """
    if (
        not isinstance(recipient_public_key, rsa.RSAPublicKey)
        or recipient_public_key.key_size < _MIN_RSA_BITS
    ):
        raise CmsError(
            "the recipient key must be an RSA public key of at least 2048 bits",
            hint="put an RSA-2048 (or larger) SubjectPublicKeyInfo in the attestation document's public_key",
        )
    cek = os.urandom(_CEK_BYTES)
    iv = os.urandom(_AES_BLOCK)
    padder = padding.PKCS7(_AES_BLOCK * 8).padder()
    padded = padder.update(bytes(plaintext)) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cek), modes.CBC(iv)).encryptor()
    encrypted_content = encryptor.update(padded) + encryptor.finalize()
    encrypted_key = recipient_public_key.encrypt(cek, _oaep())

    sha256 = algos.DigestAlgorithm({"algorithm": "sha256", "parameters": core.Null()})
    oaep_params = algos.RSAESOAEPParams(
        {
            "hash_algorithm": sha256,
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": sha256},
        }
    )
    ktri = cms.KeyTransRecipientInfo(
        {
            "version": "v2",
            "rid": cms.RecipientIdentifier(
                name="subject_key_identifier", value=subject_key_identifier(recipient_public_key)
            ),
            "key_encryption_algorithm": {"algorithm": "rsaes_oaep", "parameters": oaep_params},
            "encrypted_key": encrypted_key,
        }
    )
    enveloped = cms.EnvelopedData(
        {
            "version": "v2",
            "recipient_infos": [cms.RecipientInfo(name="ktri", value=ktri)],
            "encrypted_content_info": {
                "content_type": "data",
                "content_encryption_algorithm": {"algorithm": "aes256_cbc", "parameters": iv},
                "encrypted_content": encrypted_content,
            },
        }
    )
    return cms.ContentInfo({"content_type": "enveloped_data", "content": enveloped}).dump()
