"""What the two protocol clients share: answer pieces, a record of the wire, typed refusals.

Both the "kms" and the "attested" client post a sealed envelope to ``/v1/infer`` and read the same
frames back; only the sealing differs. Their callers (``ask``/``chat``, the proxy's backends) see
the same :class:`AnswerChunk` either way, and the same typed errors when the gateway or the enclave
says no.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from nitro_llm.client.errors import RemoteError
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.attested_errors import UnknownDescriptorError

FRAMES_MEDIA_TYPE = "application/x-nitro-llm-frames"
CBOR_MEDIA_TYPE = "application/cbor"


@dataclass
class AnswerChunk:
    text: str
    final: bool = False
    finish_reason: str | None = None
    usage: Mapping[str, Any] | None = None

    def __repr__(self) -> str:  # the text is the user's answer: keep it out of logs and tracebacks
        return f"AnswerChunk(text=<{len(self.text)} chars>, final={self.final})"


@dataclass
class WireRecord:
    """What crossed the untrusted network for one turn (for `demo` and the leak tests)."""

    envelope: bytes = b""
    answer_bytes: int = 0
    frames: int = 0
    header: Mapping[str, Any] = field(default_factory=dict)


MAX_REMOTE_TEXT = 500
MAX_ERROR_BODY = 64 * 1024


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
    return RemoteError(code, message, hint, frame.get("retryable") is True)


def response_error(response: httpx.Response) -> NitroLLMError:
    """A non-200 answer from the gateway (its JSON error body, or just the status) as a typed error."""
    body = b""
    for piece in response.iter_bytes():  # bounded: a hostile gateway's "error" could be endless
        body += piece
        if len(body) > MAX_ERROR_BODY:
            break
    try:
        data = json.loads(body[:MAX_ERROR_BODY])
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = untrusted_text(data.get("code"), f"http_{response.status_code}")
    message = untrusted_text(data.get("message"), f"the gateway answered HTTP {response.status_code}")
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    retryable = bool(data.get("retryable", response.status_code in (429, 503, 504)))
    return RemoteError(code, message, untrusted_text(data.get("hint"), ""), retryable)
