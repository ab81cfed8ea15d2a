"""The "kms" protocol's cryptography: a sealed request in, sealed answer chunks out.

The client seals its request with AES-256-GCM under a KMS data key; the header (request id,
timestamp, model, mode, conversation, key) travels in clear but is bound as AAD, so the gateway can
route on it and cannot change it. Answer chunks are sealed under a per-request key derived from the
data key, with the chunk's sequence number and final flag inside the nonce: the client detects a
chunk that was dropped, repeated, reordered, flagged final early, or never marked final (the
sealer and opener are protocol/chunks.py, shared with the "attested" protocol). Requests and chunks
are padded to size buckets (protocol/padding.py) before they are sealed, so lengths do not show.
Wire layout (version 2; version 1 was unpadded and is refused): docs/CONTRACTS.md, "protocol kms".
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from nitro_llm.protocol import cbor
from nitro_llm.protocol.chunks import AnswerChunks, ChunkKey
from nitro_llm.protocol.envelopes import Envelope, EnvelopeHead
from nitro_llm.protocol.errors import (
    DataKeyError,
    DecryptionFailedError,
    EnvelopeError,
    EnvelopeVersionError,
    RequestSchemaError,
)
from nitro_llm.protocol.messages import ChatRequest
from nitro_llm.protocol.padding import REQUEST_BUCKETS, Buckets, pad, unpad

VERSION = 2  # 1: unpadded requests and chunks (refused with EnvelopeVersionError)
PROTOCOL = "kms"
MODES = frozenset({"chat"})
DATA_KEY_SIZE = 32
NONCE_SIZE = 12
TAG_SIZE = 16
MAX_EDK_SIZE = 6144  # KMS's CiphertextBlob limit
MAX_CT_SIZE = 16 * 1024 * 1024
MAX_MODEL_CHARS = 128
MAX_KEY_ID_CHARS = 2048
RESPONSE_INFO = b"nitro-llm/v1 kms response"
ENCRYPTION_CONTEXT_KEY = "nitro-llm:conversation"

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEADER_FIELDS = frozenset({"request_id", "timestamp", "model", "mode", "conversation_id", "key_id"})
_ENVELOPE_FIELDS = frozenset({"v", "protocol", "header", "edk", "nonce", "ct"})


def _printable(value: Any, max_chars: int) -> bool:
    return isinstance(value, str) and 0 < len(value) <= max_chars and value.isprintable()


def new_id() -> str:
    """A 128-bit random id in the 32-hex form the header requires (request and conversation ids)."""
    return secrets.token_hex(16)


@dataclass(frozen=True)
class KmsHeader:
    request_id: str
    timestamp: int  # milliseconds since the Unix epoch, client clock
    model: str
    mode: str
    conversation_id: str
    key_id: str

    def __post_init__(self) -> None:
        for name in ("request_id", "conversation_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or not _HEX32.fullmatch(value):
                raise EnvelopeError(f"header.{name} must be 32 lowercase hex characters")
        if not cbor.is_int_in(self.timestamp, 1, 2**53):
            raise EnvelopeError("header.timestamp must be a positive integer of milliseconds")
        if not _printable(self.model, MAX_MODEL_CHARS):
            raise EnvelopeError(f"header.model must be 1 to {MAX_MODEL_CHARS} printable characters")
        if self.mode not in MODES:
            raise EnvelopeError(f"header.mode must be one of {', '.join(sorted(MODES))}")
        if not _printable(self.key_id, MAX_KEY_ID_CHARS):
            raise EnvelopeError(f"header.key_id must be 1 to {MAX_KEY_ID_CHARS} printable characters")

    @classmethod
    def new(
        cls, *, model: str, conversation_id: str, key_id: str, mode: str = "chat", now_ms: int | None = None
    ) -> KmsHeader:
        """A header for a fresh request: new random request id, current time."""
        timestamp = now_ms if now_ms is not None else time.time_ns() // 1_000_000
        return cls(new_id(), timestamp, model, mode, conversation_id, key_id)

    def to_map(self) -> dict[str, Any]:
        return asdict(self)  # the header fields, in their declared order

    @classmethod
    def from_map(cls, raw: Any) -> KmsHeader:
        if not isinstance(raw, Mapping):
            raise EnvelopeError("header must be a map")
        if set(raw) != _HEADER_FIELDS:
            raise EnvelopeError(f"header must have exactly the fields {', '.join(sorted(_HEADER_FIELDS))}")
        return cls(**{name: raw[name] for name in _HEADER_FIELDS})

    def aad(self) -> bytes:
        """Canonical CBOR: the same bytes whatever order a peer wrote the fields in."""
        return cbor.canonical(self.to_map())

    def encryption_context(self) -> dict[str, str]:
        """The KMS encryption context binding the data key to this conversation (GenerateDataKey/Decrypt)."""
        return {ENCRYPTION_CONTEXT_KEY: self.conversation_id}


@dataclass(frozen=True)
class KmsEnvelope(Envelope):
    """What the client sends: the header in clear but bound as AAD, the KMS-encrypted data key, and
    the padded request sealed under that data key (v2; v1 was unpadded)."""

    HEAD = EnvelopeHead(PROTOCOL, VERSION, _ENVELOPE_FIELDS, version_error=EnvelopeVersionError)

    header: KmsHeader
    edk: bytes = field(repr=False)
    nonce: bytes = field(repr=False)
    ct: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.header, KmsHeader):
            raise EnvelopeError("envelope header must be a KmsHeader")
        if not isinstance(self.edk, bytes) or not 0 < len(self.edk) <= MAX_EDK_SIZE:
            raise EnvelopeError(f"envelope 'edk' must be 1 to {MAX_EDK_SIZE} bytes")
        if not isinstance(self.nonce, bytes) or len(self.nonce) != NONCE_SIZE:
            raise EnvelopeError(f"envelope 'nonce' must be {NONCE_SIZE} bytes")
        if not isinstance(self.ct, bytes) or not TAG_SIZE <= len(self.ct) <= MAX_CT_SIZE:
            raise EnvelopeError(f"envelope 'ct' must be {TAG_SIZE} to {MAX_CT_SIZE} bytes")

    def body(self) -> dict[str, Any]:
        return {"header": self.header.to_map(), "edk": self.edk, "nonce": self.nonce, "ct": self.ct}

    @classmethod
    def from_body(cls, raw: Mapping[str, Any]) -> KmsEnvelope:
        return cls(KmsHeader.from_map(raw["header"]), raw["edk"], raw["nonce"], raw["ct"])


def _check_data_key(data_key: bytes) -> None:
    if not isinstance(data_key, bytes | bytearray) or len(data_key) != DATA_KEY_SIZE:
        raise DataKeyError(f"the data key must be {DATA_KEY_SIZE} bytes")


def seal_request(
    data_key: bytes,
    header: KmsHeader,
    request: ChatRequest | Mapping[str, Any],
    *,
    edk: bytes,
    buckets: Buckets = REQUEST_BUCKETS,
) -> KmsEnvelope:
    """Client side: validate the request (fail here, not in the enclave), pad it, then seal it.

    ``edk`` is the CiphertextBlob of the GenerateDataKey call that produced ``data_key``.
    """
    _check_data_key(data_key)
    chat = request if isinstance(request, ChatRequest) else ChatRequest.from_dict(request)
    nonce = os.urandom(NONCE_SIZE)
    ct = AESGCM(bytes(data_key)).encrypt(nonce, pad(cbor.dumps(chat.to_dict()), buckets), header.aad())
    return KmsEnvelope(header=header, edk=edk, nonce=nonce, ct=ct)


def open_request(data_key: bytes, envelope: KmsEnvelope) -> dict[str, Any]:
    """Enclave side: authenticate, decrypt and unpad; the result is a map still to be validated
    with :meth:`ChatRequest.from_dict` (schema is the messages module's job, not the cipher's)."""
    _check_data_key(data_key)
    try:
        padded = AESGCM(bytes(data_key)).decrypt(envelope.nonce, envelope.ct, envelope.header.aad())
    except InvalidTag:
        raise DecryptionFailedError(
            "the request failed authentication under its data key and header"
        ) from None
    return cbor.decode_map(unpad(padded), what="request", error=RequestSchemaError)


# --- answer chunks: the shared sealer and opener (protocol/chunks.py), under this protocol's key --


def chunk_key(data_key: bytes, header: KmsHeader) -> ChunkKey:
    """The answer's key: HKDF of the conversation's data key; every chunk's AAD is the header's."""
    _check_data_key(data_key)
    aad = header.aad()
    return ChunkKey.derive(data_key, header.request_id, info=RESPONSE_INFO, aad=lambda seq, final: aad)


CHUNKS = AnswerChunks(chunk_key)
ResponseSealer = CHUNKS.sealer  # enclave side: (data_key, header) -> ChunkSealer
ResponseOpener = CHUNKS.opener  # client side: (data_key, header) -> ChunkOpener
