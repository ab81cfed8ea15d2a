"""What the two protocol clients share: answer pieces, a record of the wire, typed refusals.

Both the "kms" and the "attested" client post a sealed envelope to ``/v1/infer`` and read the same
frames back; only the sealing differs. Their callers (``ask``/``chat``, the proxy's backends) see
the same :class:`AnswerChunk` either way, and the same typed errors when the gateway or the enclave
says no.

Every body the gateway sends is read through :func:`body_pieces` and capped while it streams
(:func:`read_capped`, :func:`read_prefix`; answer frames by ``FrameDecoder``'s frame limit): a hostile
gateway can send an endless body, and the client must hang up after its cap, never hold it whole.
Requests ask for ``identity`` encoding and an encoded body is refused, since a compressed piece could
expand far past any cap before it was counted.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from nitro_llm.client.errors import GatewayUnreachable, ServiceRefusedError
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.attested_errors import UnknownDescriptorError
from nitro_llm.protocol.chunks import ChunkOpener
from nitro_llm.protocol.frame_codec import FrameDecoder

FRAMES_MEDIA_TYPE = "application/x-nitro-llm-frames"
CBOR_MEDIA_TYPE = "application/cbor"


@dataclass
class AnswerChunk:
    text: str
    final: bool = False
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None
    restarted: str | None = None
    """Set (to the failed attempt's error code) on a marker piece with no text: discard every piece
    before it, the question was sent again and the pieces after it are the whole answer
    (``nitro_llm.client.failover``)."""

    def __repr__(self) -> str:  # the text is the user's answer: keep it out of logs and tracebacks
        restarted = f", restarted={self.restarted!r}" if self.restarted else ""
        return f"AnswerChunk(text=<{len(self.text)} chars>, final={self.final}{restarted})"


@dataclass
class WireRecord:
    """What crossed the untrusted network for one turn (for `demo` and the leak tests)."""

    envelope: bytes = b""
    answer_bytes: int = 0
    frames: int = 0
    header: Mapping[str, Any] = field(default_factory=dict)


MAX_REMOTE_TEXT = 500
MAX_ERROR_BODY = 64 * 1024
#: Sent with every request to the gateway (see the module's docstring).
IDENTITY = {"accept-encoding": "identity"}
#: The most GET /v1/attestation may send: one document and one descriptor (real ones: a few KB).
MAX_ATTESTATION_BYTES = 128 * 1024


def body_pieces(response: httpx.Response) -> Iterator[bytes]:
    """The body as it arrives, as the bytes that crossed the network: an encoded one is refused."""
    encoding = response.headers.get("content-encoding", "identity").strip().lower()
    if encoding not in ("", "identity"):
        shown = untrusted_text(encoding, "?")[:20]
        raise ServiceRefusedError(
            "gateway_encoded_body", f"the gateway sent a {shown}-encoded body after being asked for none"
        )
    yield from response.iter_bytes()


def _declared_size(response: httpx.Response) -> int | None:
    declared = response.headers.get("content-length", "")
    if not (declared.isascii() and declared.isdigit()):
        return None
    return int(declared) if len(declared) <= 15 else 10**15


def read_capped(response: httpx.Response, limit: int, *, code: str, what: str) -> bytes:
    """The whole body, read piece by piece; ``ServiceRefusedError(code)`` as soon as it passes ``limit`` bytes
    (or declares more), having held at most ``limit`` plus one piece. ``what``: e.g. "attestation answer"."""
    too_large = ServiceRefusedError(code, f"the gateway's {what} exceeds {limit} bytes")
    declared = _declared_size(response)
    if declared is not None and declared > limit:
        raise too_large
    body = bytearray()
    for piece in body_pieces(response):
        body += piece
        if len(body) > limit:
            raise too_large
    return bytes(body)


def read_prefix(response: httpx.Response, limit: int) -> bytes:
    """At most the first ``limit`` bytes of the body; reading stops there (an error body: what it
    says first is all that matters). An encoded body reads as empty."""
    body = bytearray()
    try:
        for piece in body_pieces(response):
            body += piece[: limit - len(body)]
            if len(body) >= limit:
                break
    except ServiceRefusedError:
        return b""
    return bytes(body)


def untrusted_text(value: object, default: str) -> str:
    """Text from the gateway or through it: only printable characters (escape sequences could drive
    the user's terminal), and bounded (a hostile peer could send megabytes as an "error message")."""
    text = value if isinstance(value, str) else default
    text = "".join(c if c.isprintable() else f"\\x{ord(c):02x}" for c in text[:MAX_REMOTE_TEXT])
    text = text[:MAX_REMOTE_TEXT]
    return text or default


def frame_error(frame: Mapping[str, Any]) -> NitroLLMError:
    """An enclave's ``{"t": "error"}`` frame as a typed error; "key unknown" keeps its own type so
    the attested client can re-attest."""
    code = untrusted_text(frame.get("code"), "remote_error")
    message = untrusted_text(frame.get("message"), "the enclave refused the request")
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    hint = untrusted_text(frame.get("hint"), "")
    return ServiceRefusedError(code, message, hint, frame.get("retryable") is True)


#: Refusals that say "nothing is there to answer" rather than anything about the enclave's identity.
UNREACHABLE_CODES = frozenset(
    {"gateway_unreachable", "enclave_unavailable", "enclave_timeout", "http_502", "http_503", "http_504"}
)
MAX_HEALTH_BODY = 4096


def probe_gateway(
    http: httpx.Client, gateway_url: str, *, headers: Mapping[str, str] | None = None, timeout: float = 3.0
) -> str | None:
    """None when the gateway answers ``/healthz`` and says its enclave does; else why not, for people.

    Only a liveness hint for a status display (the gateway is untrusted: it can always pretend to be
    down); what an answer is worth is decided by verification, never by this."""
    try:
        with http.stream(
            "GET",
            f"{gateway_url}/healthz",
            headers={"accept": "application/json", **IDENTITY, **(headers or {})},
            timeout=timeout,
        ) as response:
            body = read_prefix(response, MAX_HEALTH_BODY)
            status = response.status_code
    except httpx.HTTPError as exc:
        return f"no gateway answers at {gateway_url} ({type(exc).__name__})"
    if status == 200:
        return None
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    enclave = untrusted_text(data.get("enclave") if isinstance(data, dict) else None, f"HTTP {status}")
    return f"the gateway at {gateway_url} answers, but its enclave does not ({enclave})"


def fetch_attestation_bundle(http: httpx.Client, gateway_url: str, nonce: bytes, suite: str) -> bytes:
    """GET /v1/attestation: the bundle (unverified: the caller verifies it), read capped while it
    streams; a typed error for a refusal, a lost gateway, or a body past ``MAX_ATTESTATION_BYTES``."""
    try:
        with http.stream(
            "GET",
            f"{gateway_url}/v1/attestation",
            params={"nonce": nonce.hex(), "suite": suite},
            headers={"accept": CBOR_MEDIA_TYPE, **IDENTITY},
        ) as response:
            if response.status_code != 200:
                raise response_error(response)
            return read_capped(
                response, MAX_ATTESTATION_BYTES, code="attestation_too_large", what="attestation answer"
            )
    except httpx.TransportError as exc:
        raise GatewayUnreachable(f"lost the gateway at {gateway_url} ({type(exc).__name__})") from None


def response_error(response: httpx.Response) -> NitroLLMError:
    """A non-200 answer from the gateway (its JSON error body, or just the status) as a typed error."""
    body = read_prefix(response, MAX_ERROR_BODY)  # a hostile gateway's "error" could be endless
    try:
        data = json.loads(body)
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = untrusted_text(data.get("code"), f"http_{response.status_code}")
    message = untrusted_text(data.get("message"), f"the gateway answered HTTP {response.status_code}")
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    retryable = bool(data.get("retryable", response.status_code in (429, 503, 504)))
    return ServiceRefusedError(code, message, untrusted_text(data.get("hint"), ""), retryable)


def stream_answer(
    http: httpx.Client,
    gateway_url: str,
    envelope: bytes,
    opener: ChunkOpener,
    wire: WireRecord,
    headers: Mapping[str, str] | None = None,
) -> Iterator[AnswerChunk]:
    """POST a sealed envelope to ``/v1/infer`` and yield the answer as its chunks open (either protocol).

    Raises a typed error on any refusal, and on a stream cut short, reordered or tampered with: a
    partial answer is never presented as a whole one. ``wire`` counts what crossed the network.
    """
    decoder = FrameDecoder()
    try:
        with http.stream(
            "POST",
            f"{gateway_url}/v1/infer",
            content=envelope,
            headers={
                "content-type": CBOR_MEDIA_TYPE,
                "accept": FRAMES_MEDIA_TYPE,
                **IDENTITY,
                **(headers or {}),
            },
        ) as response:
            if response.status_code != 200:
                raise response_error(response)
            for piece in body_pieces(response):  # each frame capped by the decoder as it arrives
                wire.answer_bytes += len(piece)
                for frame in decoder.feed(piece):
                    wire.frames += 1
                    if frame.get("t") == "error":
                        raise frame_error(frame)
                    payload = opener.open(frame)
                    yield AnswerChunk(
                        text=payload["text"],
                        final=opener.finished,
                        finish_reason=payload.get("finish_reason"),
                        usage=payload.get("usage"),
                    )
    except httpx.TransportError as exc:
        raise GatewayUnreachable(f"lost the gateway at {gateway_url} ({type(exc).__name__})") from None
    decoder.close()
    opener.finish()
