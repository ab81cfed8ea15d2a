"""COSE_Sign1 (RFC 9052) exactly as the Nitro Secure Module produces it, for reading and for signing.

The NSM emits an untagged 4-element array ``[protected, unprotected, payload, signature]`` with the
protected header ``{1: -35}`` (ES384) and a raw 96-byte ``r || s`` signature. Anything else is refused
rather than interpreted: a verifier that accepts other algorithms or header parameters than the one
producer it trusts only widens what an attacker can try. Tagged input (tag 18) is accepted because
some tools wrap the NSM's bytes in it; the signed bytes are the same.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import decode_dss_signature, encode_dss_signature

from nitro_llm import cbor_strict
from nitro_llm.attestation.errors import SchemaError, SignatureError

#: Tag 18 is COSE_Sign1 (RFC 9052); the only tag a Nitro document may carry, and only outermost.
COSE_SIGN1_TAG = 18
#: COSE algorithm identifier of ECDSA with SHA-384 (RFC 9053).
ES384 = -35
#: The NSM's protected header, ``{1: -35}``, byte for byte.
ES384_PROTECTED = cbor2.dumps({1: ES384})
#: P-384 scalars are 48 bytes; the NSM concatenates r and s.
_COORD = 48


@dataclass(frozen=True, slots=True)
class CoseSign1:
    protected: bytes
    unprotected: dict[object, object]
    payload: bytes
    signature: bytes
    tagged: bool = False

    def to_be_signed(self) -> bytes:
        """The Sig_structure the signature covers: ``["Signature1", protected, b"", payload]``."""
        return sig_structure(self.protected, self.payload)

    def verify(self, public_key: object) -> None:
        """Raise ``SignatureError`` unless the signature verifies under ``public_key`` (P-384)."""
        if not isinstance(public_key, ec.EllipticCurvePublicKey) or public_key.curve.name != "secp384r1":
            raise SignatureError("the signing certificate's key is not an ECDSA P-384 key")
        r = int.from_bytes(self.signature[:_COORD], "big")
        s = int.from_bytes(self.signature[_COORD:], "big")
        try:
            public_key.verify(encode_dss_signature(r, s), self.to_be_signed(), ec.ECDSA(hashes.SHA384()))
        except InvalidSignature:
            raise SignatureError(
                "the COSE_Sign1 signature does not verify with the leaf certificate's key"
            ) from None

    def encode(self) -> bytes:
        body = [self.protected, self.unprotected, self.payload, self.signature]
        return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, body) if self.tagged else body)


def sig_structure(protected: bytes, payload: bytes) -> bytes:
    return cbor2.dumps(["Signature1", protected, b"", payload])


def cose_from_decoded(value: object) -> CoseSign1:
    """Check the shape of an already safely decoded COSE_Sign1 item."""
    tagged = False
    if isinstance(value, cbor2.CBORTag):
        if value.tag != COSE_SIGN1_TAG:
            raise SchemaError(f"expected COSE_Sign1 (tag 18), got tag {value.tag}")
        tagged, value = True, value.value
    # cbor2 hands tag contents over immutable (tuple, frozendict); untagged items arrive as list / dict
    if not isinstance(value, list | tuple) or len(value) != 4:
        raise SchemaError("a COSE_Sign1 is an array of 4 items: protected, unprotected, payload, signature")
    protected, unprotected, payload, signature = value
    if type(protected) is not bytes or type(payload) is not bytes or type(signature) is not bytes:
        raise SchemaError("COSE_Sign1 protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):
        raise SchemaError("the COSE_Sign1 unprotected header must be a map")
    if unprotected:
        raise SchemaError("the COSE_Sign1 unprotected header must be empty, as the NSM sends it")
    if protected != ES384_PROTECTED:
        _explain_protected(protected)
    if len(signature) != 2 * _COORD:
        raise SchemaError(f"an ES384 signature is 96 bytes (r || s), this one is {len(signature)}")
    return CoseSign1(protected, {}, payload, signature, tagged)


def _explain_protected(protected: bytes) -> None:
    """Say why a protected header other than the NSM's ``{1: -35}`` is refused."""
    header = cbor_strict.decode(
        protected, what="protected header", error=SchemaError, max_size=len(protected) or 1, max_depth=4
    )
    if isinstance(header, dict) and header.get(1) not in (None, ES384) and type(header.get(1)) is int:
        raise SchemaError(f"COSE algorithm {header[1]} is not ES384 (-35), the only one the NSM uses")
    raise SchemaError("the COSE_Sign1 protected header must be exactly {1: -35} (alg ES384)")


def sign_es384(private_key: ec.EllipticCurvePrivateKey, payload: bytes) -> bytes:
    """Produce an untagged COSE_Sign1 over ``payload``, byte-compatible with the NSM's output."""
    der = private_key.sign(sig_structure(ES384_PROTECTED, payload), ec.ECDSA(hashes.SHA384()))
    r, s = decode_dss_signature(der)
    signature = r.to_bytes(_COORD, "big") + s.to_bytes(_COORD, "big")
    return CoseSign1(ES384_PROTECTED, {}, payload, signature).encode()
