"""How the enclave shares its engine between concurrent requests, behind the ``Engine`` seam.

An engine that schedules itself (``BatchScheduler``: continuous batching) is used as it is. Any
other engine (the echo engine, the single-stream llama engine) is not thread-safe, so it is
wrapped in a ``SerialScheduler``: one generation at a time, strictly in arrival order (a plain
lock is not fair), with the same bounded queue. Either way the server calls ``generate`` from
many threads and gets ``EngineBusyError`` at once when the queue is full, passes each request's
conversation ``cache_key``, and calls ``evict(cache_key)`` when it forgets that conversation's key.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator, Sequence
from typing import Protocol, Unpack

from nitro_llm.inference.engine import ClosableStream, Engine, GenerateArgs, TokenChunk, Usage, sampling_of
from nitro_llm.inference.errors import EngineBusyError
from nitro_llm.protocol.messages import Message

_POLL_SECONDS = 0.5


class ScheduledEngine(Engine, Protocol):
    @property
    def queued(self) -> int:
        """Requests waiting or running."""
        ...

    def evict(self, cache_key: bytes) -> bool:
        """Wipe whatever the engine keeps for this conversation (see ``Engine``); True if it held any."""
        ...

    def cache_stats(self) -> dict[str, int]:
        """Counters of the per-conversation cache (no key, no content); empty when it keeps none."""
        ...

    def close(self) -> None: ...


class _Turn(ClosableStream):
    """One request's place in the serial queue, and its stream once its turn comes."""

    def __init__(
        self,
        owner: SerialScheduler,
        messages: Sequence[Message],
        kwargs: dict[str, object],
        cancel: threading.Event | None,
    ) -> None:
        self._owner = owner
        self._messages = messages
        self._kwargs = kwargs
        self._cancel = cancel
        self._inner: Iterator[TokenChunk] | None = None

    def _next(self) -> TokenChunk:
        if self._inner is None:
            outcome = self._owner._wait_turn(self, self._cancel)
            if outcome != "go":
                self.close()
                if outcome == "closed":
                    raise EngineBusyError("the engine is shutting down")
                return TokenChunk("", "cancelled", Usage(None, 0))
            self._inner = self._owner.engine.generate(
                self._messages,
                cancel=self._cancel,
                **self._kwargs,  # type: ignore[arg-type]
            )
        try:
            chunk = next(self._inner)
        except BaseException:
            self.close()
            raise
        if chunk.final:
            self.close()
        return chunk

    def close(self) -> None:
        if self._done:
            return
        self._done = True
        if self._inner is not None:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        self._owner._leave(self)


class SerialScheduler:
    """One generation at a time, first come first served, at most ``1 + max_waiting`` admitted."""

    def __init__(self, engine: Engine, *, max_waiting: int) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.engine = engine
        self._max_waiting = max_waiting
        self._cv = threading.Condition()
        self._line: deque[_Turn] = deque()  # the head holds the engine
        self._closed = False

    @property
    def name(self) -> str:
        return self.engine.name

    @property
    def queued(self) -> int:
        with self._cv:
            return len(self._line)

    def generate(self, messages: Sequence[Message], **args: Unpack[GenerateArgs]) -> Iterator[TokenChunk]:
        # The engines run here (echo, single-stream llama) keep nothing per conversation: the key
        # is not passed on, so they need not know about it.
        turn = _Turn(self, messages, dict(sampling_of(args)), args.get("cancel"))
        with self._cv:
            if self._closed:
                raise EngineBusyError("the engine is shutting down")
            if len(self._line) > self._max_waiting:
                raise EngineBusyError(f"{len(self._line)} requests are running or waiting")
            self._line.append(turn)
        return turn

    def _wait_turn(self, turn: _Turn, cancel: threading.Event | None) -> str:
        with self._cv:
            while self._line and self._line[0] is not turn and not self._closed:
                if cancel is not None and cancel.is_set():
                    return "cancelled"
                self._cv.wait(_POLL_SECONDS)
            return "closed" if self._closed else "go"

    def _leave(self, turn: _Turn) -> None:
        with self._cv:
            if turn in self._line:
                self._line.remove(turn)
            self._cv.notify_all()

    def evict(self, cache_key: bytes) -> bool:
        return False  # nothing is kept per conversation (see generate)

    def cache_stats(self) -> dict[str, int]:
        return {}

    def close(self) -> None:
        with self._cv:
            self._closed = True
            self._cv.notify_all()


def scheduled(engine: Engine, *, max_waiting: int) -> ScheduledEngine:
    """The engine as the server should use it: batching engines as they are, others serialised."""
    if getattr(engine, "schedules_itself", False):
        return engine  # type: ignore[return-value]
    return SerialScheduler(engine, max_waiting=max_waiting)
