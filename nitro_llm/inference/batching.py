"""Continuous batching: many requests share each llama.cpp decode step, each streamed on its own.

Why: on a CPU a decode step is bound by reading the weights; one step for eight sequences reads
them once, so eight users cost far less than eight times one. The scheduler thread owns the model
(``LlamaBatchDecoder``) and loops: drop cancelled sequences, admit waiting requests into free
slots, build one step, decode, hand each sampled token to its request's stream.

Fairness: admission is first come, first served (a free slot goes to the oldest waiting
request); every running sequence gets exactly one token per round, and prompt processing is cut
into chunks (``prefill_chunk`` tokens per round while others are decoding) so a 20 KB question
cannot freeze the streams already running.

Bounded: at most ``n_seq`` running plus ``max_waiting`` waiting; beyond that ``generate`` raises
``EngineBusyError`` at once (the client is told to retry) instead of queueing without limit.
Cancellation: a request stops at the next step after its ``cancel`` event is set or its stream is
closed (the connection to the client went away), and its slot and KV cells are freed.
"""

from __future__ import annotations

import codecs
import heapq
import logging
import queue
import secrets
import threading
from collections import deque
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from nitro_llm.inference.engine import FinishReason, TokenChunk, Usage
from nitro_llm.inference.errors import EngineBusyError, InferenceError
from nitro_llm.inference.llama_batch import Feed, LlamaBatchDecoder, Sampling, check_fits
from nitro_llm.protocol.messages import Message

log = logging.getLogger(__name__)

DEFAULT_PREFILL_CHUNK = 128
_POLL_SECONDS = 0.25


@dataclass(eq=False)
class _Request:
    prompt: list[int]
    budget: int  # answer tokens allowed: max_tokens, capped by the context
    sampling: Sampling
    cancel: threading.Event | None
    out: queue.SimpleQueue[TokenChunk | BaseException] = field(default_factory=queue.SimpleQueue)
    abandoned: bool = False  # the consumer closed its stream
    slot: int = -1
    pos: int = 0  # next KV position = tokens of this sequence already decoded
    pending: int | None = None  # sampled, not yet fed back
    generated: int = 0
    text: Any = field(default_factory=lambda: codecs.getincrementaldecoder("utf-8")("replace"))

    @property
    def cancelled(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())


class _Stream:
    """The consumer's side of one request. A class rather than a generator so that closing it
    before the first token (the peer left while the request waited) still cancels the request."""

    def __init__(self, request: _Request, wake: threading.Condition) -> None:
        self._request = request
        self._wake = wake
        self._done = False

    def __iter__(self) -> Iterator[TokenChunk]:
        return self

    def __next__(self) -> TokenChunk:
        if self._done:
            raise StopIteration
        item = self._request.out.get()
        if isinstance(item, BaseException):
            self._done = True
            raise item
        if item.final:
            self._done = True
        return item

    def close(self) -> None:
        if not self._done:
            self._done = True
            self._request.abandoned = True
            with self._wake:
                self._wake.notify()


class BatchScheduler:
    """An ``Engine`` that batches concurrent requests; ``generate`` is safe from any thread."""

    schedules_itself = True  # the enclave server adds no lock of its own around it

    def __init__(
        self,
        decoder: LlamaBatchDecoder,
        *,
        name: str,
        ctx: int,
        max_waiting: int,
        prefill_chunk: int = DEFAULT_PREFILL_CHUNK,
    ) -> None:
        if max_waiting < 0 or ctx < 2 or prefill_chunk < 1:
            raise ValueError("max_waiting >= 0, ctx >= 2 and prefill_chunk >= 1 are required")
        self._decoder = decoder
        self._name = name
        self._ctx = ctx
        self._max_waiting = max_waiting
        self._prefill_chunk = prefill_chunk
        self._wake = threading.Condition()
        self._waiting: deque[_Request] = deque()
        self._active: dict[int, _Request] = {}
        self._order: list[_Request] = []  # active, in admission order (prefill round-robin)
        self._free_slots = list(range(decoder.n_seq))
        self._outbox: list[tuple[_Request, TokenChunk | BaseException]] = []
        self._closed = False
        self._model_lock = threading.Lock()  # tokenising vs freeing the model
        self.steps = 0  # decode steps run (for benchmarks: tokens per step shows the batching)
        self.step_tokens = 0
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._name

    @property
    def queued(self) -> int:
        """Requests waiting or running (the pong frame's ``queued``)."""
        with self._wake:
            return len(self._waiting) + len(self._active)

    @property
    def capacity(self) -> int:
        return self._decoder.n_seq + self._max_waiting

    def generate(
        self,
        messages: Sequence[Message],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenChunk]:
        with self._model_lock:  # on the caller's thread, beside decoding; never after close()
            if self._closed:
                raise EngineBusyError("the engine is shutting down")
            prompt = self._decoder.prompt_tokens(messages)
        return self.generate_tokens(
            prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, cancel=cancel
        )

    def generate_tokens(
        self,
        prompt: list[int],
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        cancel: threading.Event | None = None,
    ) -> Iterator[TokenChunk]:
        """Admit a tokenised prompt or refuse it now: ``EngineBusyError`` when the queue is full,
        ``ContextOverflowError`` when it could never fit."""
        ctx = min(self._ctx, self._decoder.n_ctx_seq)
        check_fits(len(prompt), ctx)
        budget = max(0, min(max_tokens, ctx - len(prompt)))
        sampling = Sampling(
            temperature=float(temperature), seed=seed if seed is not None else secrets.randbits(32)
        )
        request = _Request(prompt=prompt, budget=budget, sampling=sampling, cancel=cancel)
        with self._wake:
            if self._closed:
                raise EngineBusyError("the engine is shutting down")
            ahead = len(self._waiting) + len(self._active)
            if ahead >= self.capacity:
                raise EngineBusyError(f"{ahead} requests are running or waiting")
            self._waiting.append(request)
            self._wake.notify()
        return _Stream(request, self._wake)

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything, stop the scheduler thread, free the model."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
        if not self._thread.is_alive():
            with self._model_lock:
                self._decoder.close()

    # -- the scheduler thread -------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._active:
                    self._wake.wait()
                if self._closed:
                    for request in list(self._waiting):
                        request.out.put(TokenChunk("", "cancelled", Usage(len(request.prompt), 0)))
                    self._waiting.clear()
            if self._closed:
                for request in list(self._order):
                    self._finish(request, "cancelled")
                self._flush()
                return
            self._drop_cancelled()
            self._admit()
            calls = self._plan()
            if not calls:
                self._flush()
                with self._wake:  # everything active was just cancelled
                    if not self._closed and not self._active:
                        self._wake.wait(_POLL_SECONDS)
                continue
            for feeds in calls:
                self._decode(feeds)
            self._flush()

    def _decode(self, feeds: list[Feed]) -> None:
        try:
            sampled = self._decoder.step(feeds)
        except InferenceError as exc:
            self._fail(feeds, exc)
            return
        except Exception as exc:  # a bug in the binding: fail these requests, keep serving
            log.warning("batch step failed type=%s", type(exc).__name__)
            self._fail(feeds, InferenceError("generation failed"))
            return
        self.steps += 1
        self.step_tokens += sum(len(f.tokens) for f in feeds)
        self._advance(feeds, sampled)

    def _drop_cancelled(self) -> None:
        with self._wake:
            gone = [r for r in self._waiting if r.cancelled]
            for request in gone:
                self._waiting.remove(request)
        for request in gone:
            request.out.put(TokenChunk("", "cancelled", Usage(len(request.prompt), 0)))
        for request in [r for r in self._order if r.cancelled]:
            self._finish(request, "cancelled")

    def _admit(self) -> None:
        while True:
            with self._wake:
                if not self._waiting or not self._free_slots:
                    return
                head = self._waiting.popleft()
                head.slot = heapq.heappop(self._free_slots)  # lowest free slot: keeps ids consecutive
                self._active[head.slot] = head
            self._order.append(head)
            self._decoder.open_slot(head.slot, head.sampling)
            if head.budget == 0:
                self._finish(head, "length")

    def _plan(self) -> list[list[Feed]]:
        """The decode calls of one round: every running sequence's next token together in one call,
        then one prompt's next chunk in a call of its own (whole, when it fits: a prompt cut into
        different chunks would round differently and change a greedy answer).

        Two rules of llama.cpp with one KV stream per sequence shape this. It splits a call into
        micro-batches in which every sequence has the same number of tokens, so prompt chunks
        mixed with single decode tokens would become many passes over the weights. And a
        micro-batch only takes sequence ids in increasing, consecutive order, so feeds go in slot
        order and slots are handed out lowest first (see ``_admit``): eight running sequences in
        slots 0-7 are one pass, not eight.
        """
        calls: list[list[Feed]] = []
        running = sorted((r for r in self._order if r.pending is not None), key=lambda r: r.slot)
        if running:
            calls.append(
                [Feed(r.slot, (r.pending,), r.pos, sample=True) for r in running if r.pending is not None]
            )
        room = self._prefill_chunk if running else self._decoder.n_batch
        for request in self._order:  # prompts in admission order: the oldest first
            if request.pending is None and request.pos < len(request.prompt):
                part = request.prompt[request.pos : request.pos + room]
                last = request.pos + len(part) == len(request.prompt)
                calls.append([Feed(request.slot, part, request.pos, sample=last)])
                break
        return calls

    def _advance(self, feeds: list[Feed], sampled: dict[int, int]) -> None:
        decoder = self._decoder
        for feed in feeds:
            request = self._active.get(feed.slot)
            if request is None:
                continue
            request.pos += len(feed.tokens)
            request.pending = None
            token = sampled.get(feed.slot)
            if token is None:
                continue  # a prompt chunk that was not the last
            if decoder.is_end(token):
                self._finish(request, "stop")
                continue
            request.generated += 1
            text = request.text.decode(decoder.piece(token))
            if text:
                self._emit(request, TokenChunk(text))
            if request.generated >= request.budget:
                self._finish(request, "length")
            else:
                request.pending = token

    def _finish(self, request: _Request, reason: FinishReason) -> None:
        tail = request.text.decode(b"", final=True)
        self._emit(request, TokenChunk(tail, reason, Usage(len(request.prompt), request.generated)))
        self._release(request)

    def _fail(self, feeds: list[Feed], exc: InferenceError) -> None:
        for feed in feeds:
            request = self._active.get(feed.slot)
            if request is not None:
                self._emit(request, type(exc)(exc.message, hint=exc.hint))
                self._release(request)

    def _emit(self, request: _Request, item: TokenChunk | BaseException) -> None:
        self._outbox.append((request, item))

    def _flush(self) -> None:
        """Hand out a round's chunks at its end, in order, rather than one by one mid-round: each
        hand-off wakes a stream's thread, which would take the GIL from the scheduler between its
        ctypes calls; after the round, the scheduler is inside llama_decode (GIL released)."""
        outbox, self._outbox = self._outbox, []
        for request, item in outbox:
            request.out.put(item)

    def _release(self, request: _Request) -> None:
        self._decoder.close_slot(request.slot)
        self._order.remove(request)
        with self._wake:
            del self._active[request.slot]
            heapq.heappush(self._free_slots, request.slot)
