"""The two HPKE suites the "attested" protocol offers, by name, and their key encodings.

RFC 9180 base mode with HKDF-SHA256 and AES-256-GCM in both; only the KEM differs:
``x25519`` (DHKEM(X25519), the default) and ``mlkem768-x25519`` (the ML-KEM-768 + X25519 hybrid, for
questions that must stay secret even against a future quantum computer recording traffic today).
``cryptography``'s hybrid key objects do not expose their halves, so this module keeps the halves it
generated and defines the public key's bytes itself: the ML-KEM-768 encapsulation key (1184 bytes)
followed by the X25519 public key (32 bytes), the order the hybrid KEM drafts use.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cache
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import mlkem, x25519
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, MLKEM768X25519PrivateKey, Suite
from cryptography.hazmat.primitives.hpke import MLKEM768X25519PublicKey as _HybridPublicKey
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nitro_llm.protocol.attested_errors import DescriptorError, HpkeOpenError, SuiteError
from nitro_llm.protocol.attested_wire import DEFAULT_SUITE, MLKEM768_X25519, SUITES, X25519  # noqa: F401

_MLKEM768_PUBLIC_SIZE = 1184
_X25519_PUBLIC_SIZE = 32
_MLKEM768_SEED_SIZE = 64
_DERIVE_INFO = b"nitro-llm/v1 hpke key pair"
MIN_DERIVE_SECRET = 32


@dataclass(frozen=True)
class SuiteInfo:
    name: str
    public_key_size: int
    enc_size: int


@cache
def _suite(name: str) -> Suite:
    kem = KEM.X25519 if name == X25519 else KEM.MLKEM768_X25519
    return Suite(kem, KDF.HKDF_SHA256, AEAD.AES_256_GCM)


def suite_info(name: Any) -> SuiteInfo:
    if name == X25519:
        return SuiteInfo(X25519, _X25519_PUBLIC_SIZE, KEM.X25519.enc_length())
    if name == MLKEM768_X25519:
        return SuiteInfo(
            MLKEM768_X25519, _MLKEM768_PUBLIC_SIZE + _X25519_PUBLIC_SIZE, KEM.MLKEM768_X25519.enc_length()
        )
    raise SuiteError("unknown HPKE suite name")


def load_public_key(name: str, data: bytes) -> x25519.X25519PublicKey | _HybridPublicKey:
    """Decode a descriptor's public key; a malformed key is a descriptor error, found before sealing."""
    info = suite_info(name)
    if not isinstance(data, bytes) or len(data) != info.public_key_size:
        raise DescriptorError(f"an {name} public key must be {info.public_key_size} bytes")
    try:
        if name == X25519:
            return x25519.X25519PublicKey.from_public_bytes(data)
        pq = mlkem.MLKEM768PublicKey.from_public_bytes(data[:_MLKEM768_PUBLIC_SIZE])
        return _HybridPublicKey(pq, x25519.X25519PublicKey.from_public_bytes(data[_MLKEM768_PUBLIC_SIZE:]))
    except ValueError:
        raise DescriptorError(f"the {name} public key is not a valid encoding") from None


def seal(name: str, public_key: bytes, plaintext: bytes, *, info: bytes) -> tuple[bytes, bytes]:
    """Single-shot HPKE to ``public_key``; returns (enc, ciphertext) so the envelope can check each."""
    sealed = _suite(name).encrypt(plaintext, load_public_key(name, public_key), info=info)
    enc_size = suite_info(name).enc_size
    return sealed[:enc_size], sealed[enc_size:]


@dataclass(frozen=True)
class HpkeKeyPair:
    """The enclave's session key: created in enclave memory, never serialised, gone on restart; or,
    for a fleet, derived in each enclave's memory from the secret KMS released to it (``derive``)."""

    suite: str
    public_key: bytes
    _private: Any = field(repr=False, compare=False)

    def __repr__(self) -> str:
        return f"HpkeKeyPair(suite={self.suite!r}, public_key=<{len(self.public_key)} bytes>)"

    @classmethod
    def generate(cls, suite: str = DEFAULT_SUITE) -> HpkeKeyPair:
        suite_info(suite)
        classical = x25519.X25519PrivateKey.generate()
        classical_public = classical.public_key().public_bytes_raw()
        if suite == X25519:
            return cls(suite, classical_public, classical)
        pq = mlkem.MLKEM768PrivateKey.generate()
        public = pq.public_key().public_bytes_raw() + classical_public
        return cls(suite, public, MLKEM768X25519PrivateKey(pq, classical))

    @classmethod
    def derive(cls, suite: str, secret: bytes, *, context: bytes) -> HpkeKeyPair:
        """The same key pair from the same secret on every machine that holds it (the fleet key,
        nitro_llm/enclave/fleet_key.py). HKDF-SHA256 of ``secret``, separated by suite, part and
        ``context``, gives the X25519 private key and the ML-KEM-768 seed."""
        suite_info(suite)
        if not isinstance(secret, bytes | bytearray) or len(secret) < MIN_DERIVE_SECRET:
            raise ValueError(f"a key pair is derived from at least {MIN_DERIVE_SECRET} secret bytes")

        def expand(part: bytes, length: int) -> bytes:
            info = b"\x00".join((_DERIVE_INFO, suite.encode(), part, context))
            return HKDF(hashes.SHA256(), length, salt=None, info=info).derive(bytes(secret))

        classical = x25519.X25519PrivateKey.from_private_bytes(expand(b"x25519", 32))
        classical_public = classical.public_key().public_bytes_raw()
        if suite == X25519:
            return cls(suite, classical_public, classical)
        pq = mlkem.MLKEM768PrivateKey.from_seed_bytes(expand(b"mlkem768", _MLKEM768_SEED_SIZE))
        public = pq.public_key().public_bytes_raw() + classical_public
        return cls(suite, public, MLKEM768X25519PrivateKey(pq, classical))

    def open(self, enc: bytes, ct: bytes, *, info: bytes) -> bytes:
        try:
            return _suite(self.suite).decrypt(enc + ct, self._private, info=info)
        except Exception:  # InvalidTag, or ValueError for an enc that is not a valid KEM ciphertext
            raise HpkeOpenError("the request did not open under this enclave's session key") from None
