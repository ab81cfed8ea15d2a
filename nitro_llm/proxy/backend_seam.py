"""The one seam between the proxy's HTTP surface and a confidential protocol.

The proxy translates OpenAI requests into ``stream(...)`` calls and ``describe()`` into the web chat's
verification panel; which protocol (and which verification) sits behind it is chosen once, at start.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol, Unpack, runtime_checkable

from nitro_llm.protocol.messages import AnswerOptions


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
    ``protocol`` (str), ``verified`` (True only when this machine verified the enclave; False when
    it refused it, which blocks sending; None when nothing was verified here: the kms protocol, or
    nobody answered), ``failure_reason`` (str | None), ``pcrs`` (index -> hex), ``model_digest``
    (str | None), ``verified_at`` (ISO 8601 | None), and ``checks`` (what verification checked).

    Optionally ``probe() -> str | None``: why the gateway or its enclave does not answer now (None:
    it does); ``GET /v1/verification`` then says "enclave unreachable" (proxy/verification.py).
    """

    model_id: str

    def stream(
        self,
        messages: list[Mapping[str, str]],
        *,
        conversation: str | None = None,
        **options: Unpack[AnswerOptions],
    ) -> Iterator[BackendChunk]:
        """``options`` are sealed into the request with the messages (``stop`` included: the host never
        learns it); the proxy passes ``stop`` only when the caller set it.

        ``conversation``: the caller's name for the chat (proxy/conversations.py), passed only when it
        gave one. Requests with the same name are turns of one conversation, whose state (attested:
        the conversation secret; kms: the data key and conversation id) was drawn at random for that
        name; the name itself is never sent. Without one a request shares nothing with any other, so
        nothing can continue it: the backend seals it ``one_shot`` and the enclave keeps nothing."""
        ...

    def describe(self) -> dict[str, Any]: ...
