"""The Engine seam: what the enclave server needs from any model backend.

The server depends only on this protocol, so the llama.cpp backend, the deterministic echo engine
and a future batching engine are interchangeable. Engines need not be thread-safe: the server runs
one generation at a time.

``cache_key`` names the conversation a request belongs to, so an engine may keep that
conversation's state between turns (the batching engine keeps its KV cells: inference/kv_cache.py).
It is opaque, secret and per conversation (the enclave derives it from the conversation's key), and
an engine must never use state kept under one key for a request under another. None: nothing is
reused or kept. Engines without such state accept it and ignore it.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Literal, Protocol, TypedDict, Unpack

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


class ClosableStream:
    """A request's token stream as an object, not a generator: a generator's ``close()`` before its
    first ``next()`` runs none of its code, so a request abandoned while it waited for its turn would
    never be withdrawn. Subclasses give ``_next`` (the next chunk) and ``close`` (withdraw the
    request); this class ends the iteration after the final chunk or once closed."""

    _done = False

    def __iter__(self) -> Iterator[TokenChunk]:
        return self

    def __next__(self) -> TokenChunk:
        if self._done:
            raise StopIteration
        return self._next()

    def _next(self) -> TokenChunk:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


class SamplingArgs(TypedDict):
    """How to sample one answer, given as keywords: ``generate(messages, max_tokens=…, temperature=…,
    seed=…)``. Every engine gathers them, with the request's own arguments, as
    ``**args: Unpack[GenerateArgs]``, so the set is defined once and callers keep passing plain
    keywords."""

    max_tokens: int
    temperature: float
    seed: int | None


class GenerateArgs(SamplingArgs, total=False):
    """What ``generate`` takes besides the messages: how to sample (:class:`SamplingArgs`, required),
    and the request's own ``cancel`` (stop soon after it is set: finish_reason "cancelled") and
    ``cache_key`` (the conversation's opaque KV-cache key; engines that keep nothing per conversation
    ignore it)."""

    cancel: threading.Event | None
    cache_key: bytes | None


def sampling_of(args: GenerateArgs) -> SamplingArgs:
    """The sampling part alone, for an engine that hands it on."""
    return SamplingArgs(max_tokens=args["max_tokens"], temperature=args["temperature"], seed=args["seed"])


class Engine(Protocol):
    @property
    def name(self) -> str:
        """Short model name, reported to clients and in pong frames."""
        ...

    def generate(self, messages: Sequence[Message], **args: Unpack[GenerateArgs]) -> Iterator[TokenChunk]:
        """Stream the answer; stop early (finish_reason "cancelled") soon after ``cancel`` is set."""
        ...
