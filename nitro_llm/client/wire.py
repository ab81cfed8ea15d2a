"""What the two protocol clients share: answer pieces, a record of the wire, typed refusals.

Both the "kms" and the "attested" client post a sealed envelope to ``/v1/infer`` and read the same
frames back; only the sealing differs. Their callers (``ask``/``chat``, the proxy's backends) see
the same :class:`AnswerChunk` either way, and the same typed errors when the gateway or the enclave
says no.
"""

from __future__ import annotations

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


def frame_error(frame: Mapping[str, Any]) -> NitroLLMError:
    """An enclave's ``{"t": "error"}`` frame as a typed error; "key unknown" keeps its own type so
    the attested client can re-attest."""
    code = str(frame.get("code", "remote_error"))
    message = str(frame.get("message", "the enclave refused the request"))
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    return RemoteError(code, message, str(frame.get("hint", "")), bool(frame.get("retryable", False)))


def response_error(response: httpx.Response) -> NitroLLMError:
    """A non-200 answer from the gateway (its JSON error body, or just the status) as a typed error."""
    response.read()
    try:
        data = response.json()
    except ValueError:
        data = {}
    if not isinstance(data, dict):
        data = {}
    code = str(data.get("code", f"http_{response.status_code}"))
    message = str(data.get("message", f"the gateway answered HTTP {response.status_code}"))
    if code == UnknownDescriptorError.code:
        return UnknownDescriptorError(message)
    retryable = bool(data.get("retryable", response.status_code in (429, 503, 504)))
    return RemoteError(code, message, str(data.get("hint", "")), retryable)
