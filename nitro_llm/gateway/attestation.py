"""``GET /v1/attestation``: relay a client's nonce to the enclave and its signed answer back.

The gateway cannot verify what it relays and does not need to: the client checks the document's
signature chain, PCRs and nonce, and the descriptor's hash against the document's ``user_data``. A
gateway that altered either would only get itself refused. What the gateway does check is the
shape of the query (so garbage never reaches the enclave) and the shape of the enclave's reply (so
it never sends a client a half-formed body with status 200).
"""

from __future__ import annotations

import logging
import re
import time

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.enclave_link import EnclaveLink
from nitro_llm.gateway.errors import BadEnclaveReply, BadRequest, EnclaveRefused
from nitro_llm.protocol.attested_wire import (
    DEFAULT_SUITE,
    MAX_NONCE_SIZE,
    MIN_NONCE_SIZE,
    SUITES,
    attest_frame,
    encode_attestation_bundle,
    read_attestation_frame,
)

__all__ = ["ATTESTATION_MEDIA_TYPE", "DEFAULT_SUITE", "fetch_attestation", "parse_nonce", "parse_suite"]

log = logging.getLogger("nitro_llm.gateway")

ATTESTATION_MEDIA_TYPE = "application/cbor"
ATTEST_TIMEOUT_SECONDS = 10.0
_HEX = re.compile(r"(?:[0-9a-fA-F]{2})+")


def parse_nonce(text: str) -> bytes:
    """The client's challenge, as bytes: even-length hex of MIN_NONCE_SIZE to MAX_NONCE_SIZE bytes."""
    if not MIN_NONCE_SIZE * 2 <= len(text) <= MAX_NONCE_SIZE * 2 or not _HEX.fullmatch(text):
        raise BadRequest(
            f"nonce must be {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} bytes, hex-encoded",
            hint="send GET /v1/attestation?nonce=<64 hex characters of fresh randomness>",
        )
    return bytes.fromhex(text)


def parse_suite(name: str) -> str:
    if name not in SUITES:
        raise BadRequest(
            "unknown HPKE suite", hint=f"ask for suite={' or suite='.join(SUITES)} (default {DEFAULT_SUITE})"
        )
    return name


async def fetch_attestation(link: EnclaveLink, nonce_hex: str, suite: str) -> bytes:
    """The HTTP body for the client: ``{"v", "document", "descriptor"}`` as the enclave produced them."""
    started = time.monotonic()
    nonce, suite = parse_nonce(nonce_hex), parse_suite(suite)
    reply = await link.call(attest_frame(nonce, suite), timeout=ATTEST_TIMEOUT_SECONDS)
    if reply.get("t") == "error":
        refused = EnclaveRefused.from_frame(reply)
        log.info("attestation refused code=%s", refused.code)
        raise refused
    try:
        document, descriptor = read_attestation_frame(reply)
    except NitroLLMError as exc:
        raise BadEnclaveReply(f"the enclave's attestation reply is malformed ({exc.code})") from None
    body = encode_attestation_bundle(document, descriptor)
    log.info(
        "attestation outcome=ok suite=%s bytes=%d ms=%.1f",
        suite,
        len(body),
        (time.monotonic() - started) * 1000,
    )
    return body
