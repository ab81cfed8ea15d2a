"""The one seam between the proxy's HTTP surface and a confidential protocol.

The proxy translates OpenAI requests into ``stream(...)`` calls and ``describe()`` into the web chat's
verification panel; which protocol (and which verification) sits behind it is chosen once, at start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable


@dataclass(frozen=True)
class BackendChunk:
    """A piece of the answer. The last one carries ``finish_reason`` (and ``usage`` when known)."""

    text: str
    finish_reason: str | None = None
    usage: Mapping[str, int] | None = None

    def __repr__(self) -> str:  # the text is the user's answer: keep it out of logs
        return f"BackendChunk(text=<{len(self.text)} chars>, finish_reason={self.finish_reason!r})"


@runtime_checkable
class ConfidentialBackend(Protocol):
    """What the proxy needs from a protocol client.

    ``stream`` raises a typed ``NitroLLMError`` for anything that is not a complete, authentic answer
    (refused verification, unreachable gateway, truncated or tampered stream); it never ends early
    without the final chunk. ``describe`` reports what was verified, for people, with at least:
    ``protocol`` (str), ``verified`` (bool: False blocks the web chat), ``failure_reason``
    (str | None), ``pcrs`` (index -> hex), ``model_digest`` (str | None), ``verified_at``
    (ISO 8601 | None).
    """

    model_id: str

    def stream(
        self,
        messages: list[Mapping[str, str]],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
    ) -> Iterator[BackendChunk]: ...

    def describe(self) -> dict[str, Any]: ...
