"""The emulator's ``CiphertextBlob`` format: AES-256-GCM under the key's material.

Layout: ``b"NLK1" || key id (36 ASCII bytes, a UUID) || nonce (12) || ciphertext || tag (16)``.
The header and the canonical encryption context are the AAD, so changing any byte, naming another
key, or decrypting with a different context fails authentication, which KMS reports as
``InvalidCiphertextException``. The key id travels in clear (as in AWS's blobs) so that Decrypt can
find the key without being told; it is authenticated, not trusted.
"""

from __future__ import annotations

import os
import re
import struct
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitro_llm.kms.errors import InvalidCiphertext

MAGIC = b"NLK1"
_KEY_ID_LEN = 36
_NONCE_LEN = 12
_TAG_LEN = 16
_HEADER_LEN = len(MAGIC) + _KEY_ID_LEN
_UUID = re.compile(rb"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_INVALID = ""  # AWS's InvalidCiphertextException from Decrypt carries no message; neither do we


def seal(material: bytes, key_id: str, plaintext: bytes, context: Mapping[str, str]) -> bytes:
    header = MAGIC + key_id.encode("ascii")
    if len(header) != _HEADER_LEN:
        raise ValueError("key ids are UUIDs")
    nonce = os.urandom(_NONCE_LEN)
    return header + nonce + AESGCM(material).encrypt(nonce, plaintext, header + canonical_context(context))


def key_id_of(blob: bytes) -> str:
    """The key a blob claims to be under; raises if it is not one of ours at all."""
    if len(blob) < _HEADER_LEN + _NONCE_LEN + _TAG_LEN or not blob.startswith(MAGIC):
        raise InvalidCiphertext(_INVALID, hint="pass the CiphertextBlob exactly as KMS returned it")
    key_id = blob[len(MAGIC) : _HEADER_LEN]
    if not _UUID.match(key_id):
        raise InvalidCiphertext(_INVALID, hint="pass the CiphertextBlob exactly as KMS returned it")
    return key_id.decode("ascii")


def open_blob(material: bytes, blob: bytes, context: Mapping[str, str]) -> bytes:
    key_id_of(blob)
    header = blob[:_HEADER_LEN]
    nonce = blob[_HEADER_LEN : _HEADER_LEN + _NONCE_LEN]
    try:
        return AESGCM(material).decrypt(
            nonce, blob[_HEADER_LEN + _NONCE_LEN :], header + canonical_context(context)
        )
    except InvalidTag:
        raise InvalidCiphertext(
            _INVALID,
            hint="the blob was altered, or the encryption context differs from the one used to encrypt",
        ) from None


def canonical_context(context: Mapping[str, str]) -> bytes:
    """Order-independent and unambiguous: sorted pairs, each part length-prefixed."""
    out = bytearray(struct.pack(">I", len(context)))
    for key, value in sorted((k.encode("utf-8"), v.encode("utf-8")) for k, v in context.items()):
        out += struct.pack(">I", len(key)) + key + struct.pack(">I", len(value)) + value
    return bytes(out)
