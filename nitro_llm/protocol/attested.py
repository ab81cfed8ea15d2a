"""The "attested" protocol's cryptography: the client seals to a key it verified, not to a key policy.

The enclave publishes a session descriptor (HPKE public key, model digest, config digest, protocol
version) and puts the descriptor's SHA-256 into its NSM attestation document's ``user_data``; a
client that verified the document therefore knows the key lives in the measured enclave. Requests
are HPKE-sealed (RFC 9180 base mode, ``info`` bound to the descriptor hash) and carry a fresh
response key; answer chunks are AES-256-GCM under a key derived from it, with the chunk's sequence
number and final flag in both the nonce and the AAD, so a dropped, repeated, reordered, early-final
or missing-final chunk is detected. Requests and chunks are padded to size buckets first.

A request may carry a ``conversation``: 32 random bytes the client draws once per conversation and
seals into every turn of it. Only the client and the enclave ever see it (the host sees HPKE
ciphertext); the enclave keys that conversation's KV cache by a MAC of it under a secret of its own
(enclave/conversation_keys.py), so a turn prefills only what the conversation added. Absent (older
clients, or a client that does not want its turns linked): nothing is kept between requests.

Pure functions and classes: no I/O, no clock except where a timestamp is created. Freshness and
replay checks on requests are the enclave server's job: :class:`OpenedRequest` exposes the
``request_id`` and ``timestamp`` it needs. Wire layout: docs/CONTRACTS.md, "protocol attested".
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from functools import partial
from typing import Any

from nitro_llm.protocol import cbor
from nitro_llm.protocol.attested_errors import (
    AttestedEnvelopeError,
    DescriptorError,
    ResponseKeyError,
    UnknownDescriptorError,
)
from nitro_llm.protocol.attested_wire import (  # the relayable parts, re-exported for one import site
    MAX_DESCRIPTOR_SIZE,
    MAX_DOCUMENT_SIZE,
    MAX_NONCE_SIZE,
    MIN_NONCE_SIZE,
    attest_frame,
    attestation_frame,
    decode_attestation_bundle,
    encode_attestation_bundle,
    read_attest_frame,
    read_attestation_frame,
)
from nitro_llm.protocol.chunks import AnswerChunks, ChunkKey, ChunkOpener, ChunkSealer
from nitro_llm.protocol.envelopes import Envelope, EnvelopeHead
from nitro_llm.protocol.errors import RequestSchemaError
from nitro_llm.protocol.hpke_suite import DEFAULT_SUITE, SUITES, HpkeKeyPair, load_public_key, suite_info
from nitro_llm.protocol.hpke_suite import seal as hpke_seal
from nitro_llm.protocol.messages import ChatRequest
from nitro_llm.protocol.padding import CHUNK_BUCKETS, REQUEST_BUCKETS, Buckets, pad, unpad

__all__ = [
    "MAX_DESCRIPTOR_SIZE",
    "MAX_DOCUMENT_SIZE",
    "MAX_NONCE_SIZE",
    "MIN_NONCE_SIZE",
    "AttestedEnvelope",
    "EnclaveSession",
    "OpenedRequest",
    "ResponseOpener",
    "ResponseSealer",
    "SealedRequest",
    "SessionDescriptor",
    "attest_frame",
    "attestation_frame",
    "decode_attestation_bundle",
    "descriptor_hash",
    "encode_attestation_bundle",
    "new_conversation",
    "read_attest_frame",
    "read_attestation_frame",
    "seal_request",
]

VERSION = 1
PROTOCOL = "attested"
PROTOCOL_VERSION = 1
DESCRIPTOR_HASH_SIZE = 32
RESPONSE_KEY_SIZE = 32
CONVERSATION_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_CT_SIZE = 16 * 1024 * 1024
MAX_TIMESTAMP = 2**63 - 1
REQUEST_INFO = b"nitro-llm/v1 attested request"
RESPONSE_INFO = b"nitro-llm/v1 attested response"

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_DESCRIPTOR_FIELDS = frozenset(
    {"protocol_version", "hpke_suite", "hpke_public_key", "model_digest", "config_digest"}
)
_ENVELOPE_FIELDS = frozenset({"v", "protocol", "suite", "descriptor_hash", "enc", "ct"})
_SEALED_FIELDS = frozenset({"request", "response_key", "request_id", "timestamp"})
_OPTIONAL_SEALED_FIELDS = frozenset({"conversation"})


# --- session descriptor ----------------------------------------------------------------------


@dataclass(frozen=True)
class SessionDescriptor:
    """What the enclave promises about this session; its hash is what the NSM signs (``user_data``)."""

    hpke_suite: str
    hpke_public_key: bytes = field(repr=False)
    model_digest: str  # SHA-256 hex of the GGUF file the enclave loaded
    config_digest: str  # SHA-256 hex of the enclave's effective configuration
    protocol_version: int = PROTOCOL_VERSION

    def __post_init__(self) -> None:
        if self.protocol_version != PROTOCOL_VERSION or isinstance(self.protocol_version, bool):
            raise DescriptorError(f"descriptor protocol_version must be {PROTOCOL_VERSION}")
        if self.hpke_suite not in SUITES:
            raise DescriptorError(f"descriptor hpke_suite must be one of {', '.join(SUITES)}")
        load_public_key(self.hpke_suite, self.hpke_public_key)  # size and encoding, or DescriptorError
        for name in ("model_digest", "config_digest"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX64.fullmatch(value):
                raise DescriptorError(f"descriptor {name} must be 64 lowercase hex characters (SHA-256)")

    def to_map(self) -> dict[str, Any]:
        return asdict(self)  # exactly the descriptor's fields; to_cbor sorts them canonically

    def to_cbor(self) -> bytes:
        """Canonical CBOR: one descriptor has exactly one encoding, hence exactly one hash."""
        return cbor.canonical(self.to_map())

    def digest(self) -> bytes:
        return descriptor_hash(self.to_cbor())

    @classmethod
    def from_cbor(cls, data: bytes) -> SessionDescriptor:
        """Strict: exact fields, and the bytes must be the canonical encoding of what they decode to,
        so the hash a client checks against ``user_data`` names exactly this descriptor."""
        if not isinstance(data, bytes) or not 0 < len(data) <= MAX_DESCRIPTOR_SIZE:
            raise DescriptorError(f"a session descriptor must be 1 to {MAX_DESCRIPTOR_SIZE} bytes")
        raw = cbor.decode_map(data, what="session descriptor", error=DescriptorError)
        if set(raw) != _DESCRIPTOR_FIELDS:
            raise DescriptorError(f"descriptor must have exactly {', '.join(sorted(_DESCRIPTOR_FIELDS))}")
        descriptor = cls(
            hpke_suite=raw["hpke_suite"],
            hpke_public_key=raw["hpke_public_key"],
            model_digest=raw["model_digest"],
            config_digest=raw["config_digest"],
            protocol_version=raw["protocol_version"],
        )
        if descriptor.to_cbor() != data:
            raise DescriptorError("descriptor bytes are not in canonical CBOR form")
        return descriptor


def descriptor_hash(descriptor_bytes: bytes) -> bytes:
    """SHA-256 of the descriptor's bytes as received: the value the NSM document's user_data holds."""
    return hashlib.sha256(descriptor_bytes).digest()


def _request_info(digest: bytes) -> bytes:
    return REQUEST_INFO + b"\x00" + digest


# --- request envelope ------------------------------------------------------------------------


@dataclass(frozen=True)
class AttestedEnvelope(Envelope):
    """What the client sends: an HPKE ciphertext to the session whose descriptor hash it names."""

    HEAD = EnvelopeHead(PROTOCOL, VERSION, _ENVELOPE_FIELDS, error=AttestedEnvelopeError)

    suite: str
    descriptor_hash: bytes
    enc: bytes = field(repr=False)
    ct: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if self.suite not in SUITES:
            raise AttestedEnvelopeError(f"envelope 'suite' must be one of {', '.join(SUITES)}")
        if not isinstance(self.descriptor_hash, bytes) or len(self.descriptor_hash) != DESCRIPTOR_HASH_SIZE:
            raise AttestedEnvelopeError(f"envelope 'descriptor_hash' must be {DESCRIPTOR_HASH_SIZE} bytes")
        enc_size = suite_info(self.suite).enc_size
        if not isinstance(self.enc, bytes) or len(self.enc) != enc_size:
            raise AttestedEnvelopeError(f"envelope 'enc' must be {enc_size} bytes for {self.suite}")
        if not isinstance(self.ct, bytes) or not TAG_SIZE < len(self.ct) <= MAX_CT_SIZE:
            raise AttestedEnvelopeError(f"envelope 'ct' must be {TAG_SIZE + 1} to {MAX_CT_SIZE} bytes")

    def body(self) -> dict[str, Any]:
        return {"suite": self.suite, "descriptor_hash": self.descriptor_hash, "enc": self.enc, "ct": self.ct}

    @classmethod
    def from_body(cls, raw: Mapping[str, Any]) -> AttestedEnvelope:
        return cls(raw["suite"], raw["descriptor_hash"], raw["enc"], raw["ct"])


def new_request_id() -> str:
    return secrets.token_hex(16)


@dataclass(frozen=True)
class SealedRequest:
    """Client side: the envelope to send and what the client keeps to open the answer."""

    envelope: AttestedEnvelope
    response_key: bytes = field(repr=False)
    request_id: str
    timestamp: int

    def response_opener(self) -> ChunkOpener:
        return ResponseOpener(self.response_key, self.request_id)


@dataclass(frozen=True)
class OpenedRequest:
    """Enclave side: a validated request, and what the server must check (freshness, replay)."""

    request: ChatRequest
    response_key: bytes = field(repr=False)
    request_id: str
    timestamp: int  # milliseconds since the Unix epoch, client clock: the server checks its skew
    conversation: bytes | None = field(default=None, repr=False)  # the client's secret, see above

    def response_sealer(self, buckets: Buckets = CHUNK_BUCKETS) -> ChunkSealer:
        return ChunkSealer(chunk_key(self.response_key, self.request_id), buckets=buckets)


def seal_request(
    descriptor: SessionDescriptor,
    request: ChatRequest | Mapping[str, Any],
    *,
    buckets: Buckets = REQUEST_BUCKETS,
    request_id: str | None = None,
    timestamp: int | None = None,
    conversation: bytes | None = None,
) -> SealedRequest:
    """Client side. ``descriptor`` must be one the client verified against an attestation document:
    sealing to it is the moment the question leaves the user's control. ``conversation``: the
    conversation's secret (``new_conversation()``), the same for each of its turns; None: none."""
    chat = request if isinstance(request, ChatRequest) else ChatRequest.from_dict(request)
    request_id = request_id or new_request_id()
    timestamp = int(time.time() * 1000) if timestamp is None else timestamp
    _check_request_id(request_id, error=ValueError)
    if not cbor.is_int_in(timestamp, 0, MAX_TIMESTAMP):
        raise ValueError("timestamp must be milliseconds since the Unix epoch")
    _check_conversation(conversation, error=ValueError)
    response_key = os.urandom(RESPONSE_KEY_SIZE)
    inner: dict[str, Any] = {
        "request": chat.to_dict(),
        "response_key": response_key,
        "request_id": request_id,
        "timestamp": timestamp,
    }
    if conversation is not None:  # absent when unused: the request an older enclave accepts
        inner["conversation"] = conversation
    digest = descriptor.digest()
    enc, ct = hpke_seal(
        descriptor.hpke_suite,
        descriptor.hpke_public_key,
        pad(cbor.dumps(inner), buckets),
        info=_request_info(digest),
    )
    envelope = AttestedEnvelope(descriptor.hpke_suite, digest, enc, ct)
    return SealedRequest(envelope, response_key, request_id, timestamp)


class EnclaveSession:
    """Enclave side: one HPKE key pair and the descriptor that names it.

    A new session (new key) per enclave start, or per rotation; the server keeps the previous session
    briefly if it wants in-flight clients to finish, and answers others with
    :class:`UnknownDescriptorError`, on which clients re-attest.
    """

    def __init__(self, keypair: HpkeKeyPair, *, model_digest: str, config_digest: str) -> None:
        self._keypair = keypair
        self.descriptor = SessionDescriptor(
            hpke_suite=keypair.suite,
            hpke_public_key=keypair.public_key,
            model_digest=model_digest,
            config_digest=config_digest,
        )
        self.descriptor_bytes = self.descriptor.to_cbor()
        self.descriptor_hash = descriptor_hash(self.descriptor_bytes)

    @classmethod
    def generate(cls, *, model_digest: str, config_digest: str, suite: str = DEFAULT_SUITE) -> EnclaveSession:
        return cls(HpkeKeyPair.generate(suite), model_digest=model_digest, config_digest=config_digest)

    @property
    def suite(self) -> str:
        return self._keypair.suite

    def user_data(self) -> bytes:
        """What to pass as the NSM's ``user_data`` when attesting this session."""
        return self.descriptor_hash

    def open_request(self, envelope: bytes | AttestedEnvelope) -> OpenedRequest:
        """Authenticate, decrypt, unpad and validate; raise a typed error for anything else."""
        env = envelope if isinstance(envelope, AttestedEnvelope) else AttestedEnvelope.from_cbor(envelope)
        if env.descriptor_hash != self.descriptor_hash or env.suite != self.suite:
            raise UnknownDescriptorError("the request was sealed to a session key this enclave does not hold")
        padded = self._keypair.open(env.enc, env.ct, info=_request_info(self.descriptor_hash))
        inner = cbor.decode_map(unpad(padded), what="sealed request", error=RequestSchemaError)
        if not _SEALED_FIELDS <= set(inner) <= _SEALED_FIELDS | _OPTIONAL_SEALED_FIELDS:
            raise RequestSchemaError(
                f"sealed request must have exactly {', '.join(sorted(_SEALED_FIELDS))}, "
                f"and may have {', '.join(sorted(_OPTIONAL_SEALED_FIELDS))}"
            )
        response_key, request_id, timestamp = inner["response_key"], inner["request_id"], inner["timestamp"]
        if not isinstance(response_key, bytes) or len(response_key) != RESPONSE_KEY_SIZE:
            raise RequestSchemaError(f"sealed request 'response_key' must be {RESPONSE_KEY_SIZE} bytes")
        _check_request_id(request_id, error=RequestSchemaError)
        if not cbor.is_int_in(timestamp, 0, MAX_TIMESTAMP):
            raise RequestSchemaError("sealed request 'timestamp' must be milliseconds since the Unix epoch")
        conversation = inner.get("conversation")
        _check_conversation(conversation, error=RequestSchemaError)
        return OpenedRequest(
            ChatRequest.from_dict(inner["request"]), response_key, request_id, timestamp, conversation
        )


def new_conversation() -> bytes:
    """A conversation's secret: drawn once by the client, sealed into each of its turns."""
    return secrets.token_bytes(CONVERSATION_SIZE)


def _check_conversation(conversation: Any, *, error: type[Exception]) -> None:
    if conversation is not None and (
        not isinstance(conversation, bytes) or len(conversation) != CONVERSATION_SIZE
    ):
        raise error(f"'conversation' must be {CONVERSATION_SIZE} bytes, or absent")


def _check_request_id(request_id: Any, *, error: type[Exception]) -> None:
    if not isinstance(request_id, str) or not _HEX32.fullmatch(request_id):
        raise error("request_id must be 32 lowercase hex characters")


# --- answer chunks: the shared sealer and opener (protocol/chunks.py), under this protocol's key --


def chunk_key(response_key: bytes, request_id: str) -> ChunkKey:
    """The answer's key: HKDF of the request's fresh response key; AAD names protocol, request, seq, final."""
    if not isinstance(response_key, bytes | bytearray) or len(response_key) != RESPONSE_KEY_SIZE:
        raise ResponseKeyError(f"the response key must be {RESPONSE_KEY_SIZE} bytes")
    _check_request_id(request_id, error=ResponseKeyError)
    return ChunkKey.derive(response_key, request_id, info=RESPONSE_INFO, aad=partial(chunk_aad, request_id))


def chunk_aad(request_id: str, seq: int, final: bool) -> bytes:
    return cbor.canonical({"protocol": PROTOCOL, "request_id": request_id, "seq": seq, "final": final})


CHUNKS = AnswerChunks(chunk_key)
ResponseSealer = CHUNKS.sealer  # enclave side: (response_key, request_id) -> ChunkSealer
ResponseOpener = CHUNKS.opener  # client side: (response_key, request_id) -> ChunkOpener
