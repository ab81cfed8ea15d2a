"""Answer chunks, sealed and opened by the same code in both protocols ("kms" and "attested").

An answer travels as numbered chunk frames ``{"t": "chunk", "seq", "final", "ct"}``. Each chunk is
AES-256-GCM under one per-answer key, with nonce = seq (8 bytes BE) || 3 zero bytes || final (1
byte), so a chunk that is dropped, repeated, reordered, flagged final early, or an answer whose
final chunk never comes, is detected: the opener accepts chunks strictly in order and
:meth:`ChunkOpener.finish` refuses an answer without its final chunk. Every plaintext is padded to
a size bucket first (protocol/padding.py), so token lengths do not show on the wire.

A protocol supplies only a :class:`ChunkKey`: the answer's AEAD key (how it is derived from the
protocol's secret) and the AAD binding each chunk to its request; ``AnswerChunks(its_key_function)``
then gives its sealer and opener constructors. Wire layout: docs/CONTRACTS.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, ParamSpec

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nitro_llm.protocol import cbor
from nitro_llm.protocol.errors import (
    ChunkAfterFinalError,
    ChunkGapError,
    ChunkReplayError,
    DecryptionFailedError,
    FrameError,
    ResponseTruncatedError,
)
from nitro_llm.protocol.padding import CHUNK_BUCKETS, Buckets, pad, unpad

__all__ = [
    "CHUNK_FIELDS",
    "CHUNK_KEY_SIZE",
    "AnswerChunks",
    "ChunkAad",
    "ChunkKey",
    "ChunkOpener",
    "ChunkSealer",
    "check_chunk_payload",
    "chunk_nonce",
]

CHUNK_KEY_SIZE = 32
CHUNK_FIELDS = frozenset({"t", "seq", "final", "ct"})
FINAL_PAYLOAD_FIELDS = frozenset({"text", "finish_reason", "usage"})
MAX_SEQ = 2**64 - 1
MAX_FINISH_REASON_CHARS = 32
MAX_USAGE_FIELDS = 8
MAX_USAGE_VALUE = 2**32

ChunkAad = Callable[[int, bool], bytes]
"""``aad(seq, final)``: the additional data a protocol binds each chunk with."""
KeyArgs = ParamSpec("KeyArgs")


@dataclass(frozen=True)
class ChunkKey:
    """What a protocol supplies for one answer: the AEAD key and the per-chunk AAD."""

    key: bytes = field(repr=False)
    aad: ChunkAad = field(repr=False)

    def __post_init__(self) -> None:
        if not isinstance(self.key, bytes) or len(self.key) != CHUNK_KEY_SIZE:
            raise ValueError(f"a chunk key is {CHUNK_KEY_SIZE} bytes")

    @classmethod
    def derive(cls, secret: bytes, request_id: str, *, info: bytes, aad: ChunkAad) -> ChunkKey:
        """HKDF-SHA256(secret, salt = the request id's 16 bytes, info): one key per answer.

        The caller has checked ``secret`` and ``request_id`` (32 hex) with its protocol's errors."""
        key = HKDF(
            algorithm=hashes.SHA256(), length=CHUNK_KEY_SIZE, salt=bytes.fromhex(request_id), info=info
        ).derive(bytes(secret))
        return cls(key, aad)


def chunk_nonce(seq: int, final: bool) -> bytes:
    return seq.to_bytes(8, "big") + b"\x00\x00\x00" + (b"\x01" if final else b"\x00")


class ChunkSealer:
    """Enclave side: seals one answer as numbered, padded chunk frames, the last one final."""

    def __init__(self, key: ChunkKey, *, buckets: Buckets = CHUNK_BUCKETS) -> None:
        self._aead = AESGCM(key.key)
        self._aad = key.aad
        self._buckets = buckets
        self._seq = 0
        self._finished = False

    def seal(self, content: str | Mapping[str, Any], final: bool = False) -> dict[str, Any]:
        """``content`` is the text, or a map with ``text`` (and, when final, ``finish_reason``/``usage``)."""
        if self._finished:
            raise RuntimeError("the answer already has its final chunk")
        payload = {"text": content} if isinstance(content, str) else dict(content)
        check_chunk_payload(payload, final, error=ValueError)
        seq = self._seq
        ct = self._aead.encrypt(
            chunk_nonce(seq, final), pad(cbor.dumps(payload), self._buckets), self._aad(seq, final)
        )
        self._seq += 1
        self._finished = final
        return {"t": "chunk", "seq": seq, "final": final, "ct": ct}


class ChunkOpener:
    """Client side: opens chunk frames strictly in order; :meth:`finish` catches a cut-off answer."""

    def __init__(self, key: ChunkKey) -> None:
        self._aead = AESGCM(key.key)
        self._aad = key.aad
        self._expected = 0
        self._finished = False

    @property
    def finished(self) -> bool:
        return self._finished

    def open(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        if not isinstance(frame, Mapping) or frame.get("t") != "chunk" or set(frame) != CHUNK_FIELDS:
            raise FrameError(f"expected a chunk frame with exactly {', '.join(sorted(CHUNK_FIELDS))}")
        seq, final, ct = frame["seq"], frame["final"], frame["ct"]
        if not cbor.is_int_in(seq, 0, MAX_SEQ):
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
            padded = self._aead.decrypt(chunk_nonce(seq, final), ct, self._aad(seq, final))
        except InvalidTag:
            raise DecryptionFailedError(f"answer chunk {seq} did not authenticate") from None
        payload = cbor.decode_map(unpad(padded), what="answer chunk", error=FrameError)
        check_chunk_payload(payload, final, error=FrameError)
        self._expected += 1
        self._finished = final
        return payload

    def finish(self) -> None:
        """Call when the stream ends: an answer without its final chunk was truncated."""
        if not self._finished:
            raise ResponseTruncatedError(f"the answer ended after {self._expected} chunks, none final")


def check_chunk_payload(payload: Mapping[str, Any], final: bool, *, error: type[Exception]) -> None:
    """A non-final chunk is exactly ``{"text"}``; the final one exactly ``{"text", "finish_reason",
    "usage": {str: int}}``, bounded, so a key holder cannot smuggle anything else to the client."""
    if not isinstance(payload.get("text"), str):
        raise error("an answer chunk needs a text 'text' field")
    if not final:
        if set(payload) != {"text"}:
            raise error("a non-final answer chunk has exactly one field, 'text'")
        return
    if set(payload) != FINAL_PAYLOAD_FIELDS:
        raise error(f"the final answer chunk has exactly {', '.join(sorted(FINAL_PAYLOAD_FIELDS))}")
    reason, usage = payload["finish_reason"], payload["usage"]
    if not isinstance(reason, str) or not 0 < len(reason) <= MAX_FINISH_REASON_CHARS:
        raise error(f"'finish_reason' must be 1 to {MAX_FINISH_REASON_CHARS} characters")
    if (
        not isinstance(usage, Mapping)
        or len(usage) > MAX_USAGE_FIELDS
        or not all(isinstance(k, str) and cbor.is_int_in(v, 0, MAX_USAGE_VALUE) for k, v in usage.items())
    ):
        raise error(f"'usage' must map at most {MAX_USAGE_FIELDS} names to non-negative integers")


class AnswerChunks(Generic[KeyArgs]):
    """One protocol's answer chunks: the shared sealer and opener under the key its ``derive`` makes.

    ``chunks = AnswerChunks(chunk_key)`` where ``chunk_key(...) -> ChunkKey`` checks the protocol's
    secret and binds its AAD; ``chunks.sealer(...)`` and ``chunks.opener(...)`` take the same arguments.
    """

    def __init__(self, derive: Callable[KeyArgs, ChunkKey]) -> None:
        self.derive = derive

    def sealer(self, *args: KeyArgs.args, **kwargs: KeyArgs.kwargs) -> ChunkSealer:
        return ChunkSealer(self.derive(*args, **kwargs))

    def opener(self, *args: KeyArgs.args, **kwargs: KeyArgs.kwargs) -> ChunkOpener:
        return ChunkOpener(self.derive(*args, **kwargs))
