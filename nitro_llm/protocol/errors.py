"""Errors of the wire protocols (frames, the "kms" envelope, the request schema, answer chunks).

Every class has a stable ``code`` because these errors cross the enclave boundary as ``{"t": "error"}``
frames and the client maps codes to actions. Messages describe the shape of what was wrong (a field
name, a length), never a field's content, which may be plaintext or key material.
"""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError, ProtocolError


# A frame could not be read: bad length prefix, bad CBOR, not a map, no type.
class FrameError(ProtocolError, code="bad_frame"):
    """send one 4-byte big-endian length followed by one CBOR map with a text 't' field"""


class FrameTooLargeError(FrameError, code="frame_too_large"):
    """send a smaller request, or raise the peer's maximum frame size on both ends"""


# The peer closed or stalled in the middle of a frame: the stream cannot be trusted past this point.
class FrameTruncatedError(FrameError, code="frame_truncated", retryable=True):
    """the connection was cut mid-frame; retry the request on a new connection"""


class EnvelopeError(ProtocolError, code="bad_envelope"):
    """build the envelope with nitro_llm.protocol.kms_envelope.seal_request"""


# An envelope of a wire version this side no longer (or does not yet) speak, e.g. unpadded kms v1.
class EnvelopeVersionError(EnvelopeError, code="unsupported_envelope_version"):
    """upgrade the client and the enclave to the same nitro-llm release (see docs/CONTRACTS.md)"""


# An ``infer`` frame names a protocol this enclave does not speak (or has switched off).
class UnknownProtocolError(EnvelopeError, code="unknown_protocol"):
    """seal the request with a protocol the enclave serves: 'kms' or 'attested'"""


class RequestSchemaError(ProtocolError, code="bad_request"):
    """see nitro_llm.protocol.messages for the request fields and their limits"""


class DataKeyError(ProtocolError, code="bad_data_key"):
    """use the 32-byte Plaintext of KMS GenerateDataKey(KeySpec=AES_256)"""


# AES-GCM refused the bytes: wrong key, tampered ciphertext, nonce or header (AAD).
class DecryptionFailedError(ProtocolError, code="decrypt_failed"):
    """the message was altered in transit or sealed under another data key; resend it"""


# Answer chunks arrived out of order: an active attacker or a broken relay.
class ResponseOrderError(ProtocolError, code="response_out_of_order"):
    """discard the partial answer and retry the request"""


class ChunkReplayError(ResponseOrderError, code="response_chunk_replayed"):
    pass


class ChunkGapError(ResponseOrderError, code="response_chunk_missing"):
    pass


class ChunkAfterFinalError(ResponseOrderError, code="response_chunk_after_final"):
    pass


class ResponseTruncatedError(ProtocolError, code="response_truncated", retryable=True):
    """the answer stopped before its final chunk; discard it and retry the request"""


# An error the enclave reported in an ``{"t": "error"}`` frame, re-raised on the receiving side.
class EnclaveReportedError(NitroLLMError):
    def __init__(self, code: str, message: str, *, hint: str, retryable: bool) -> None:
        super().__init__(message, hint=hint)
        self.code = code
        self.retryable = retryable
