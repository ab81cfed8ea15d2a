"""Errors of the wire protocols (frames, the "kms" envelope, the request schema, answer chunks).

Every class has a stable ``code`` because these errors cross the enclave boundary as ``{"t": "error"}``
frames and the client maps codes to actions. Messages describe the shape of what was wrong (a field
name, a length), never a field's content, which may be plaintext or key material.
"""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError, ProtocolError


class FrameError(ProtocolError):
    """A frame could not be read: bad length prefix, bad CBOR, not a map, no type."""

    code = "bad_frame"
    default_hint = "send one 4-byte big-endian length followed by one CBOR map with a text 't' field"


class FrameTooLargeError(FrameError):
    code = "frame_too_large"
    default_hint = "send a smaller request, or raise the peer's maximum frame size on both ends"


class FrameTruncatedError(FrameError):
    """The peer closed or stalled in the middle of a frame: the stream cannot be trusted past this point."""

    code = "frame_truncated"
    retryable = True
    default_hint = "the connection was cut mid-frame; retry the request on a new connection"


class EnvelopeError(ProtocolError):
    code = "bad_envelope"
    default_hint = "build the envelope with nitro_llm.protocol.kms_envelope.seal_request"


class RequestSchemaError(ProtocolError):
    code = "bad_request"
    default_hint = "see nitro_llm.protocol.messages for the request fields and their limits"


class DataKeyError(ProtocolError):
    code = "bad_data_key"
    default_hint = "use the 32-byte Plaintext of KMS GenerateDataKey(KeySpec=AES_256)"


class DecryptionFailedError(ProtocolError):
    """AES-GCM refused the bytes: wrong key, tampered ciphertext, nonce or header (AAD)."""

    code = "decrypt_failed"
    default_hint = "the message was altered in transit or sealed under another data key; resend it"


class ResponseOrderError(ProtocolError):
    """Answer chunks arrived out of order: an active attacker or a broken relay."""

    code = "response_out_of_order"
    default_hint = "discard the partial answer and retry the request"


class ChunkReplayError(ResponseOrderError):
    code = "response_chunk_replayed"


class ChunkGapError(ResponseOrderError):
    code = "response_chunk_missing"


class ChunkAfterFinalError(ResponseOrderError):
    code = "response_chunk_after_final"


class ResponseTruncatedError(ProtocolError):
    code = "response_truncated"
    retryable = True
    default_hint = "the answer stopped before its final chunk; discard it and retry the request"


class RemoteError(NitroLLMError):
    """An error the enclave reported in an ``{"t": "error"}`` frame, re-raised on the receiving side."""

    def __init__(self, code: str, message: str, *, hint: str, retryable: bool) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.retryable = retryable
