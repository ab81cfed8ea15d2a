"""The parts of the "attested" protocol the gateway relays: suite names, attest frames, the bundle.

Kept apart from :mod:`nitro_llm.protocol.attested` and :mod:`nitro_llm.protocol.hpke_suite` so that
the gateway can answer ``GET /v1/attestation`` without importing any code that seals or opens: it
moves a nonce in and a signed document plus descriptor out, and can check neither. The client
verifies both (``nitro_llm.client.attested_verify``); the enclave produces both.
Wire layout: docs/CONTRACTS.md, "protocol attested".
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nitro_llm.errors import ProtocolError
from nitro_llm.protocol import cbor
from nitro_llm.protocol.attested_errors import DescriptorError
from nitro_llm.protocol.errors import FrameError

X25519 = "x25519"
MLKEM768_X25519 = "mlkem768-x25519"
SUITES: tuple[str, ...] = (X25519, MLKEM768_X25519)
DEFAULT_SUITE = X25519

BUNDLE_VERSION = 1
MAX_DOCUMENT_SIZE = 64 * 1024  # real NSM documents are about 4.5 KB
MAX_DESCRIPTOR_SIZE = 4096  # the hybrid public key (1216 bytes) plus two digests
MIN_NONCE_SIZE = 16
MAX_NONCE_SIZE = 512  # the NSM's limit for the nonce field
_BUNDLE_FIELDS = frozenset({"v", "document", "descriptor"})


# --- attestation bundle (the body of GET /v1/attestation) ------------------------------------


def encode_attestation_bundle(document: bytes, descriptor: bytes) -> bytes:
    """The signed document and the descriptor it vouches for, travelling together."""
    return cbor.dumps({"v": BUNDLE_VERSION, "document": document, "descriptor": descriptor})


def decode_attestation_bundle(data: bytes) -> tuple[bytes, bytes]:
    """Client side: ``(document, descriptor)`` still to be verified; nothing here is trusted yet."""
    raw = cbor.decode_map(data, what="attestation bundle", error=DescriptorError)
    if set(raw) != _BUNDLE_FIELDS or raw["v"] != BUNDLE_VERSION or isinstance(raw["v"], bool):
        raise DescriptorError(
            f"attestation bundle must be v{BUNDLE_VERSION} with exactly document and descriptor"
        )
    return _document_and_descriptor(raw, what="attestation bundle", error=DescriptorError)


def _document_and_descriptor(
    raw: Mapping[str, Any], *, what: str, error: type[ProtocolError]
) -> tuple[bytes, bytes]:
    """The bundle's and the frame's two fields: non-empty bytes, each within its size limit."""
    for name, limit in (("document", MAX_DOCUMENT_SIZE), ("descriptor", MAX_DESCRIPTOR_SIZE)):
        value = raw[name]
        if not isinstance(value, bytes) or not 0 < len(value) <= limit:
            raise error(f"{what} {name!r} must be 1 to {limit} bytes")
    return raw["document"], raw["descriptor"]


# --- gateway <-> enclave frames for GET /v1/attestation -------------------------------------


def attest_frame(nonce: bytes, suite: str = DEFAULT_SUITE) -> dict[str, Any]:
    """Gateway -> enclave: "attest your current session of this suite, with this client's nonce"."""
    return {"t": "attest", "nonce": nonce, "suite": suite}


def read_attest_frame(frame: Mapping[str, Any]) -> tuple[bytes, str]:
    if frame.get("t") != "attest" or set(frame) != {"t", "nonce", "suite"}:
        raise FrameError("an 'attest' frame has exactly t, nonce and suite")
    nonce, suite = frame["nonce"], frame["suite"]
    if not isinstance(nonce, bytes) or not MIN_NONCE_SIZE <= len(nonce) <= MAX_NONCE_SIZE:
        raise FrameError(f"'attest' nonce must be {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} bytes")
    if suite not in SUITES:
        raise FrameError(f"'attest' suite must be one of {', '.join(SUITES)}")
    return nonce, suite


def attestation_frame(document: bytes, descriptor: bytes) -> dict[str, Any]:
    """Enclave -> gateway; the gateway sends ``encode_attestation_bundle`` of the two as the HTTP body."""
    return {"t": "attestation", "document": document, "descriptor": descriptor}


def read_attestation_frame(frame: Mapping[str, Any]) -> tuple[bytes, bytes]:
    if frame.get("t") != "attestation" or set(frame) != {"t", "document", "descriptor"}:
        raise FrameError("an 'attestation' frame has exactly t, document and descriptor")
    return _document_and_descriptor(frame, what="'attestation' frame", error=FrameError)
