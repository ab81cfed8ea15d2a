"""The Engine seam: what the enclave server needs from any model backend.

The server depends only on this protocol, so the llama.cpp backend, the deterministic echo engine
and a future batching engine are interchangeable. Engines need not be thread-safe: the server runs
one generation at a time.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol

from nitro_llm.protocol.messages import Message

FinishReason = Literal["stop", "length", "cancelled"]


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int | None
    completion_tokens: int

    def to_dict(self) -> dict[str, int]:
        out = {"completion_tokens": self.completion_tokens}
        if self.prompt_tokens is not None:
            out["prompt_tokens"] = self.prompt_tokens
        return out


@dataclass(frozen=True)
class TokenChunk:
    """A piece of the answer. The last chunk of a generation carries ``finish_reason`` and ``usage``
    (its text may be empty); no chunk follows it."""

    text: str = field(repr=False)
    finish_reason: FinishReason | None = None
    usage: Usage | None = None

    @property
    def final(self) -> bool:
        return self.finish_reason is not None


class Engine(Protocol):
    @property
    def name(self) -> str:
        """Short model name, reported to clients and in pong frames."""
        ...

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenChunk]:
        """Stream the answer; stop early (finish_reason "cancelled") soon after ``cancel`` is set."""
        ...
