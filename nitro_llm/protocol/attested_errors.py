"""Errors of the "attested" protocol (HPKE-sealed requests, descriptor-bound sessions, padded chunks).

They extend the shared protocol errors so that a client already branching on ``EnvelopeError`` or
``DecryptionFailedError`` handles the attested variants too; the answer-order errors
(``ChunkReplayError`` and friends) are reused as they are, because the failure and the remedy are
the same in both protocols. Messages name fields and sizes, never their content.
"""

from __future__ import annotations

from nitro_llm.errors import ProtocolError
from nitro_llm.protocol.errors import DecryptionFailedError, EnvelopeError


class AttestedEnvelopeError(EnvelopeError, code="bad_attested_envelope"):
    """build the envelope with nitro_llm.protocol.attested.seal_request"""


# A session descriptor is malformed: it cannot name a key, a model or a config we could check.
class DescriptorError(ProtocolError, code="bad_session_descriptor"):
    """the enclave's session descriptor is malformed: do not send it anything; report it"""


# The request was sealed to a key this enclave does not hold (rotated, restarted, or another one).
class UnknownDescriptorError(ProtocolError, code="attested_descriptor_unknown", retryable=True):
    """fetch and verify a fresh attestation (GET /v1/attestation), then seal the request again"""


class SuiteError(ProtocolError, code="unsupported_hpke_suite"):
    """use one of the HPKE suites 'x25519' or 'mlkem768-x25519'"""


# HPKE refused the request: sealed to another key, for another descriptor, or altered in transit.
class HpkeOpenError(DecryptionFailedError, code="hpke_open_failed"):
    """fetch and verify a fresh attestation, then seal the request again"""


# Authenticated plaintext whose padding is wrong: a peer bug, since the AEAD already vouched for it.
class PaddingError(ProtocolError, code="bad_padding"):
    """pad with nitro_llm.protocol.padding.pad (4-byte length, payload, zero bytes)"""


class ResponseKeyError(ProtocolError, code="bad_response_key"):
    """the response key must be 32 fresh random bytes, one per request"""
