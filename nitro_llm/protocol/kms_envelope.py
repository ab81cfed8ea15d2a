"""The "kms" protocol's cryptography: a sealed request in, sealed answer chunks out.

The client seals its request with AES-256-GCM under a KMS data key; the header (request id,
timestamp, model, mode, conversation, key) travels in clear but is bound as AAD, so the gateway can
route on it and cannot change it. Answer chunks are sealed under a per-request key derived from the
data key, with the chunk's sequence number and final flag inside the nonce: the client detects a
chunk that was dropped, repeated, reordered, flagged final early, or never marked final.
Wire layout: docs/CONTRACTS.md, "protocol kms".
"""

from __future__ import annotations

import os
import re
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nitro_llm.protocol import cbor
from nitro_llm.protocol.errors import (
    ChunkAfterFinalError,
    ChunkGapError,
    ChunkReplayError,
    DataKeyError,
    DecryptionFailedError,
    EnvelopeError,
    FrameError,
    RequestSchemaError,
    ResponseTruncatedError,
)
from nitro_llm.protocol.messages import ChatRequest

VERSION = 1
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
_CHUNK_FIELDS = frozenset({"t", "seq", "final", "ct"})


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
        return {
            "request_id": self.request_id,
            "timestamp": self.timestamp,
            "model": self.model,
            "mode": self.mode,
            "conversation_id": self.conversation_id,
            "key_id": self.key_id,
        }

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
class KmsEnvelope:
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

    def to_map(self) -> dict[str, Any]:
        return {
            "v": VERSION,
            "protocol": PROTOCOL,
            "header": self.header.to_map(),
            "edk": self.edk,
            "nonce": self.nonce,
            "ct": self.ct,
        }

    def to_cbor(self) -> bytes:
        return cbor.dumps(self.to_map())

    @classmethod
    def from_map(cls, raw: Mapping[str, Any]) -> KmsEnvelope:
        if set(raw) != _ENVELOPE_FIELDS:
            raise EnvelopeError(f"envelope must have exactly {', '.join(sorted(_ENVELOPE_FIELDS))}")
        if raw["v"] != VERSION or isinstance(raw["v"], bool):
            raise EnvelopeError(f"envelope version must be {VERSION}")
        if raw["protocol"] != PROTOCOL:
            raise EnvelopeError(f"envelope protocol must be {PROTOCOL!r}")
        return cls(KmsHeader.from_map(raw["header"]), raw["edk"], raw["nonce"], raw["ct"])

    @classmethod
    def from_cbor(cls, data: bytes) -> KmsEnvelope:
        return cls.from_map(cbor.decode_map(data, what="envelope", error=EnvelopeError))


def _check_data_key(data_key: bytes) -> None:
    if not isinstance(data_key, bytes | bytearray) or len(data_key) != DATA_KEY_SIZE:
        raise DataKeyError(f"the data key must be {DATA_KEY_SIZE} bytes")


def seal_request(
    data_key: bytes, header: KmsHeader, request: ChatRequest | Mapping[str, Any], *, edk: bytes
) -> KmsEnvelope:
    """Client side: validate the request (fail here, not in the enclave), then seal it.

    ``edk`` is the CiphertextBlob of the GenerateDataKey call that produced ``data_key``.
    """
    _check_data_key(data_key)
    chat = request if isinstance(request, ChatRequest) else ChatRequest.from_dict(request)
    nonce = os.urandom(NONCE_SIZE)
    ct = AESGCM(bytes(data_key)).encrypt(nonce, cbor.dumps(chat.to_dict()), header.aad())
    return KmsEnvelope(header=header, edk=edk, nonce=nonce, ct=ct)


def open_request(data_key: bytes, envelope: KmsEnvelope) -> dict[str, Any]:
    """Enclave side: authenticate and decrypt; the result is a map still to be validated
    with :meth:`ChatRequest.from_dict` (schema is the messages module's job, not the cipher's)."""
    _check_data_key(data_key)
    try:
        plaintext = AESGCM(bytes(data_key)).decrypt(envelope.nonce, envelope.ct, envelope.header.aad())
    except InvalidTag:
        raise DecryptionFailedError(
            "the request failed authentication under its data key and header"
        ) from None
    return cbor.decode_map(plaintext, what="request", error=RequestSchemaError)


def _response_aead(data_key: bytes, header: KmsHeader) -> AESGCM:
    _check_data_key(data_key)
    key = HKDF(
        algorithm=hashes.SHA256(),
        length=DATA_KEY_SIZE,
        salt=bytes.fromhex(header.request_id),
        info=RESPONSE_INFO,
    ).derive(bytes(data_key))
    return AESGCM(key)


def _chunk_nonce(seq: int, final: bool) -> bytes:
    return seq.to_bytes(8, "big") + b"\x00\x00\x00" + (b"\x01" if final else b"\x00")


class ResponseSealer:
    """Enclave side: seals one request's answer as numbered chunk frames, the last one final."""

    def __init__(self, data_key: bytes, header: KmsHeader) -> None:
        self._aead = _response_aead(data_key, header)
        self._aad = header.aad()
        self._seq = 0
        self._finished = False

    def seal(self, content: str | Mapping[str, Any], final: bool = False) -> dict[str, Any]:
        """``content`` is the text, or a map with ``text`` (and, when final, ``finish_reason``/``usage``)."""
        if self._finished:
            raise RuntimeError("the answer already has its final chunk")
        payload = {"text": content} if isinstance(content, str) else dict(content)
        _check_chunk_payload(payload, final, error=ValueError)
        seq = self._seq
        ct = self._aead.encrypt(_chunk_nonce(seq, final), cbor.dumps(payload), self._aad)
        self._seq += 1
        self._finished = final
        return {"t": "chunk", "seq": seq, "final": final, "ct": ct}


class ResponseOpener:
    """Client side: opens chunk frames strictly in order; :meth:`finish` catches a cut-off answer."""

    def __init__(self, data_key: bytes, header: KmsHeader) -> None:
        self._aead = _response_aead(data_key, header)
        self._aad = header.aad()
        self._expected = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def open(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        if frame.get("t") != "chunk" or set(frame) != _CHUNK_FIELDS:
            raise FrameError(f"expected a chunk frame with exactly {', '.join(sorted(_CHUNK_FIELDS))}")
        seq, final, ct = frame["seq"], frame["final"], frame["ct"]
        if not cbor.is_int_in(seq, 0, 2**64 - 1):
            raise FrameError("chunk 'seq' must be an unsigned 64-bit integer")
        if not isinstance(final, bool) or not isinstance(ct, bytes):
            raise FrameError("chunk 'final' must be a boolean and 'ct' bytes")
        if self._finished:
            raise ChunkAfterFinalError(f"chunk {seq} arrived after the final chunk")
        if seq < self._expected:
            raise ChunkReplayError(f"chunk {seq} arrived again (expected {self._expected})")
        if seq > self._expected:
            raise ChunkGapError(f"chunk {seq} arrived but chunk {self._expected} is missing")
        try:
            plaintext = self._aead.decrypt(_chunk_nonce(seq, final), ct, self._aad)
        except InvalidTag:
            raise DecryptionFailedError(f"answer chunk {seq} did not authenticate") from None
        payload = cbor.decode_map(plaintext, what="answer chunk", error=FrameError)
        _check_chunk_payload(payload, final, error=FrameError)
        self._expected += 1
        self._finished = final
        return payload

    def finish(self) -> None:
        """Call when the stream ends: an answer without its final chunk was truncated."""
        if not self._finished:
            raise ResponseTruncatedError(f"the answer ended after {self._expected} chunks, none final")


def _check_chunk_payload(payload: Mapping[str, Any], final: bool, *, error: type[Exception]) -> None:
    if not isinstance(payload.get("text"), str):
        raise error("an answer chunk needs a text 'text' field")
    usage_ok = isinstance(payload.get("usage"), Mapping)
    if final and (not isinstance(payload.get("finish_reason"), str) or not usage_ok):
        raise error("the final answer chunk needs 'finish_reason' (text) and 'usage' (map)")
