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

Conversations: a request given a ``cache_key`` leaves a copy of its KV cells behind when it
finishes (``kv_cache.ConversationCache``, bounded, LRU, wiped on eviction); the next request with
the same key restores it into the slot it is given and prefills only what its prompt adds after the
longest common prefix, so turn eight costs about what turn one did. Never across keys: a request
without a key, or with another key, prefills everything, whatever it shares with anyone.
``evict(key)`` wipes a conversation at once (and stops requests still running under that key from
leaving a copy behind).

The public prefix: the one exception to "nothing shared", and why it is safe. Most chats begin with
the same tokens, the ones the model's chat template writes before any user's words (SmolLM2: its
default system prompt, 24 tokens of a short question's 42), and llama.cpp's own server answers a
new client sooner by reusing them from whoever came before. We cannot do that: what the last
request left is another user's prompt, and a hit would tell this one what it began with. But the
template's prefix is no one's: it is read from the measured model file, prefilled once when the
scheduler starts, before any request is admitted, and the copy is only ever restored from, never
written to. How much a request reuses is then a function of its own prompt and the model alone
(``public_reused_tokens``), whoever came before; a request's own conversation copy, when it has
one, takes precedence (it holds the prefix too).
"""

from __future__ import annotations

import codecs
import functools
import heapq
import logging
import queue
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Unpack

from nitro_llm.inference.engine import ClosableStream, FinishReason, GenerateArgs, TokenChunk, Usage
from nitro_llm.inference.errors import EngineBusyError, InferenceError
from nitro_llm.inference.kv_cache import (
    DEFAULT_CACHE_BYTES,
    DEFAULT_CACHE_CONVERSATIONS,
    DEFAULT_CACHE_TTL_SECONDS,
    ConversationCache,
    common_prefix,
)
from nitro_llm.inference.llama_batch import Feed, LlamaBatchDecoder, Sampling, SeqState, check_fits
from nitro_llm.protocol.messages import Message

log = logging.getLogger(__name__)

DEFAULT_PREFILL_CHUNK = 128
_POLL_SECONDS = 0.25
_SWEEP_SECONDS = 5.0  # while idle with conversations cached: how often expired ones are wiped


def _chunk(left: int, room: int) -> int:
    """How many of ``left`` tokens to prefill in one call of at most ``room``: never leave exactly
    one for the next chunk (a lone token is computed by other kernels, see ``BatchScheduler._plan``)."""
    take = min(room, left)
    return take - 1 if left - take == 1 else take


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
    cache_key: bytes | None = field(default=None, repr=False)
    kv: list[int] = field(default_factory=list, repr=False)  # the tokens in the slot's cells (len == pos)
    cache_revoked: bool = False  # evict(cache_key) was called: leave no copy behind
    settling: bool = False  # answered; its cells are being made exact before a copy is kept
    unfed: int | None = None  # the last answer token when max_tokens ended it (sampled, never fed)

    @property
    def cancelled(self) -> bool:
        return self.abandoned or (self.cancel is not None and self.cancel.is_set())


class _Stream(ClosableStream):
    """The consumer's side of one request (closing it before the first token, when the peer left
    while the request waited, still cancels the request)."""

    def __init__(self, request: _Request, wake: threading.Condition) -> None:
        self._request = request
        self._wake = wake

    def _next(self) -> TokenChunk:
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
        cache_conversations: int = DEFAULT_CACHE_CONVERSATIONS,
        cache_bytes: int = DEFAULT_CACHE_BYTES,
        cache_ttl_seconds: float | None = DEFAULT_CACHE_TTL_SECONDS,
        public_prefix: Sequence[int] = (),
        turn_separator: Sequence[int] = (),
    ) -> None:
        """``cache_conversations`` / ``cache_bytes``: bounds of the per-conversation KV cache (0
        turns it off); ``cache_ttl_seconds``: how long an idle conversation's copy is kept;
        ``public_prefix``: tokens that depend on the model alone (``LlamaBatchDecoder.public_prefix``),
        prefilled before the first request and reused by every prompt that starts with them (see the
        module docstring); empty: none. ``turn_separator``: what the template writes between an answer
        and the next user's words (``LlamaBatchDecoder.turn_separator``), settled with a kept
        conversation's answer (see ``_settle``); empty: none."""
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
        self._cache = ConversationCache(
            max_entries=cache_conversations, max_bytes=cache_bytes, ttl_seconds=cache_ttl_seconds
        )
        self.prefill_tokens = 0  # prompt tokens decoded (a cache hit skips the reused prefix)
        self.cache_hits = 0  # requests with a key that restored their conversation's cells
        self.cache_misses = 0  # requests with a key that found nothing usable
        self.cache_reused_tokens = 0  # prompt tokens not prefilled thanks to a hit
        self.settle_tokens = 0  # answer tokens prefilled again after their answer (see _settle)
        self.public_hits = 0  # requests that restored (part of) the public prefix
        self.public_reused_tokens = 0  # prompt tokens not prefilled thanks to the public prefix
        self._public_tokens = list(public_prefix)
        self._separator = list(turn_separator)
        self._public: SeqState | None = None  # its cells, prefilled by the scheduler thread at start
        self._started = False  # the public prefix is prefilled (or failed): requests are admitted
        self._settling = 0  # active requests that are only settling (not counted as queued)
        self._thread = threading.Thread(target=self._run, name="batch-scheduler", daemon=True)
        self._thread.start()

    @property
    def name(self) -> str:
        return self._name

    @property
    def queued(self) -> int:
        """Requests waiting or running (the pong frame's ``queued``)."""
        with self._wake:
            return len(self._waiting) + len(self._active) - self._settling

    @property
    def capacity(self) -> int:
        return self._decoder.n_seq + self._max_waiting

    def generate(self, messages: Sequence[Message], **args: Unpack[GenerateArgs]) -> Iterator[TokenChunk]:
        with self._model_lock:  # on the caller's thread, beside decoding; never after close()
            if self._closed:
                raise EngineBusyError("the engine is shutting down")
            prompt = self._decoder.prompt_tokens(messages)
        return self.generate_tokens(prompt, **args)

    def generate_tokens(self, prompt: list[int], **args: Unpack[GenerateArgs]) -> Iterator[TokenChunk]:
        """Admit a tokenised prompt or refuse it now: ``EngineBusyError`` when the queue is full,
        ``ContextOverflowError`` when it could never fit. ``cache_key``: the conversation's opaque
        key (None: nothing reused, nothing kept)."""
        ctx = min(self._ctx, self._decoder.n_ctx_seq)
        check_fits(len(prompt), ctx)
        budget = max(0, min(args["max_tokens"], ctx - len(prompt)))
        seed = args["seed"]
        chosen = Sampling(
            temperature=float(args["temperature"]),
            seed=seed if seed is not None else secrets.randbits(32),
        )
        request = _Request(
            prompt=prompt,
            budget=budget,
            sampling=chosen,
            cancel=args.get("cancel"),
            cache_key=args.get("cache_key") or None,
        )
        with self._wake:
            if self._closed:
                raise EngineBusyError("the engine is shutting down")
            ahead = len(self._waiting) + len(self._active) - self._settling
            if ahead >= self.capacity:
                raise EngineBusyError(f"{ahead} requests are running or waiting")
            self._waiting.append(request)
            self._wake.notify()
        return _Stream(request, self._wake)

    def evict(self, cache_key: bytes) -> bool:
        """Wipe the conversation's saved cells now (any thread); requests under that key that are
        waiting or running finish normally but leave nothing behind. True if a copy was wiped."""
        with self._wake:
            for request in (*self._waiting, *self._active.values()):
                if request.cache_key == cache_key:
                    request.cache_revoked = True
            return self._cache.evict(cache_key)

    def wait_idle(self, timeout: float) -> bool:
        """Block until nothing waits, runs or settles, or ``timeout`` seconds have passed (for tests
        and benchmarks: a conversation's copy is kept once this returns True)."""
        deadline = time.monotonic() + timeout
        with self._wake:
            while self._waiting or self._active or not self._started:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._wake.wait(left)
            return True

    def cache_stats(self) -> dict[str, int]:
        """Counters of the conversation cache (for tests and benchmarks; no key, no content)."""
        return {
            "conversations": len(self._cache),
            "bytes": self._cache.nbytes,
            "hits": self.cache_hits,
            "misses": self.cache_misses,
            "reused_tokens": self.cache_reused_tokens,
            "prefill_tokens": self.prefill_tokens,
            "settle_tokens": self.settle_tokens,
            "settling": self._settling,  # answered turns whose copy is still being made
            "evictions": self._cache.evictions,
            "public_prefix_tokens": len(self._public_tokens) if self._public is not None else 0,
            "public_hits": self.public_hits,
            "public_reused_tokens": self.public_reused_tokens,
        }

    def close(self, timeout: float = 10.0) -> None:
        """Cancel everything, stop the scheduler thread, wipe the conversation cache, free the model."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        self._thread.join(timeout)
        self._cache.clear()
        if self._public is not None and not self._thread.is_alive():
            self._public.wipe()
        if not self._thread.is_alive():
            with self._model_lock:
                self._decoder.close()

    # -- the scheduler thread -------------------------------------------------------------------
    def _prefill_public(self) -> None:
        """Prefill the public prefix in slot 0 and keep a copy of its cells (see the module
        docstring); on any failure there is simply no public prefix. Runs before the first request
        is admitted, so its cells cannot depend on anyone's prompt."""
        tokens = self._public_tokens
        if not 2 <= len(tokens) < min(self._ctx, self._decoder.n_ctx_seq):
            return
        decoder, slot = self._decoder, 0
        decoder.close_slot(slot)
        try:
            pos = 0
            while pos < len(tokens):  # cut as every prompt is (see _plan)
                take = _chunk(len(tokens) - pos, decoder.n_batch)
                decoder.step([Feed(slot, tokens[pos : pos + take], pos, sample=False)])
                pos += take
            self._public = decoder.save_seq(slot, DEFAULT_CACHE_BYTES)
        except Exception as exc:  # no public prefix is slower, never wrong
            log.warning("public prefix not prefilled type=%s", type(exc).__name__)
            self._public = None
        finally:
            decoder.close_slot(slot)

    def _run(self) -> None:
        self._prefill_public()
        with self._wake:
            self._started = True
            self._wake.notify_all()
        while True:
            with self._wake:
                while not self._closed and not self._waiting and not self._active:
                    self._wake.wait(_SWEEP_SECONDS if len(self._cache) else None)
                    self._cache.sweep()  # idle conversations past their TTL are wiped even when idle
                if self._closed:
                    for request in list(self._waiting):
                        request.out.put(TokenChunk("", "cancelled", Usage(len(request.prompt), 0)))
                    self._waiting.clear()
            if self._closed:
                for request in list(self._order):
                    if request.settling:
                        self._release(request)
                    else:
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
        for request in list(self._order):
            if request.settling:  # its answer is out: only an evict() stops it
                if request.cache_revoked:
                    self._release(request)
            elif request.cancelled:
                self._finish(request, "cancelled")

    def _admit(self) -> None:
        # Each pass admits the oldest waiting request, or frees a slot a settling conversation held.
        for _ in range(self.capacity + self._decoder.n_seq + 1):
            with self._wake:
                if not self._waiting:
                    return
                head = self._waiting[0]
                has_free_slot = bool(self._free_slots)
            donor = self._settling_under(head.cache_key)
            if donor is None and not has_free_slot:
                oldest = next((r for r in self._order if r.settling), None)
                if oldest is None:
                    return  # every slot is answering someone
                self._cut_settling(oldest)
                continue
            with self._wake:
                self._waiting.popleft()
                if donor is not None:  # the same conversation's cells are still in that slot
                    head.slot = donor.slot
                    self._settling -= 1
                else:
                    head.slot = heapq.heappop(self._free_slots)  # lowest free: keeps ids consecutive
                self._active[head.slot] = head
            if donor is not None:
                self._order.remove(donor)
                self._order.append(head)
                self._decoder.reset_sampler(head.slot, head.sampling)
                exact = donor.kv[: donor.pos]  # the part of its cells settled so far
                donor.kv = []
                reused = self._reuse(head, exact, functools.partial(self._decoder.trim_seq, head.slot))
                if reused:
                    self.cache_hits += 1
                    self.cache_reused_tokens += reused
                else:
                    self.cache_misses += 1
                    self._restore_public(head)
            else:
                self._order.append(head)
                self._decoder.open_slot(head.slot, head.sampling)
                self._restore(head)
            if head.budget == 0:
                self._finish(head, "length")

    def _settling_under(self, key: bytes | None) -> _Request | None:
        if key is None:
            return None
        return next(
            (r for r in self._order if r.settling and r.cache_key == key and not r.cache_revoked), None
        )

    def _restore(self, request: _Request) -> None:
        """Put the conversation's saved cells (its key's only) into the request's fresh slot; when it
        has none, the public prefix's (see the module docstring); else the slot starts empty."""
        entry = self._cache.take(request.cache_key) if request.cache_key is not None else None
        if entry is not None:
            state = entry.state
            reused = self._reuse(
                request,
                entry.tokens,
                lambda keep: (
                    isinstance(state, SeqState) and self._decoder.restore_seq(request.slot, state, keep)
                ),
            )
            entry.wipe()  # restored into the slot, or useless: the copy goes either way
            if reused:
                self.cache_hits += 1
                self.cache_reused_tokens += reused
                return
        if request.cache_key is not None:
            self.cache_misses += 1
        self._restore_public(request)

    def _restore_public(self, request: _Request) -> None:
        """Restore as much of the public prefix as the request's (empty) slot's prompt starts with."""
        public = self._public
        if public is not None:
            reused = self._reuse(
                request,
                self._public_tokens,
                lambda keep: self._decoder.restore_seq(request.slot, public, keep),
            )
            if reused:
                self.public_hits += 1
                self.public_reused_tokens += reused

    def _reuse(self, request: _Request, cached: list[int], load: Callable[[int], bool]) -> int:
        """Skip the prompt tokens whose cells ``cached`` holds: the longest common prefix, but at
        least the last two prompt tokens are decoded again (the last one for its logits, and a
        one-token batch is computed by another kernel than a prompt is: see ``_plan``). How many
        were skipped; 0 with the slot emptied when none could be."""
        reuse = min(common_prefix(cached, request.prompt), len(request.prompt) - 2)
        if reuse > 0 and load(reuse):
            request.pos = reuse
            request.kv = request.prompt[:reuse]
            return reuse
        self._decoder.trim_seq(request.slot, 0)
        request.pos = 0
        request.kv = []
        return 0

    def _plan(self) -> list[list[Feed]]:
        """The decode calls of one round: every running sequence's next token together in one call,
        then one prompt's next chunk in a call of its own (whole, when it fits), or, when no prompt
        waits and nothing is decoding, one chunk of a finished answer being settled (see ``_settle``).

        Two rules of llama.cpp with one KV stream per sequence shape this. It splits a call into
        micro-batches in which every sequence has the same number of tokens, so prompt chunks
        mixed with single decode tokens would become many passes over the weights. And a
        micro-batch only takes sequence ids in increasing, consecutive order, so feeds go in slot
        order and slots are handed out lowest first (see ``_admit``): eight running sequences in
        slots 0-7 are one pass, not eight.

        Rounding: a micro-batch of one token goes through llama.cpp's matrix-vector kernels, any
        larger one through its matrix-matrix kernels, and the two round differently; prompts cut
        into chunks of two or more tokens get bit-identical cells however they are cut (measured).
        So no prompt chunk is ever a lone token (unless the whole prompt is one): the cells a
        conversation keeps are then exactly those a fresh prefill of the same tokens would make.
        """
        calls: list[list[Feed]] = []
        running = sorted((r for r in self._order if r.pending is not None), key=lambda r: r.slot)
        if running:
            calls.append(
                [Feed(r.slot, (r.pending,), r.pos, sample=True) for r in running if r.pending is not None]
            )
        room = min(self._decoder.n_batch, max(3, self._prefill_chunk if running else self._decoder.n_batch))
        prompts = [r for r in self._order if r.pending is None and r.pos < len(r.prompt) and not r.settling]
        settling = [r for r in self._order if r.settling and r.pos < len(r.kv)]
        # The oldest prompt first; settling only in a round that decodes nothing else: a settle
        # chunk is work for a next turn that may never come, and beside running answers it would
        # slow every one of them (measured: 8 kept sessions at once, 77% of llama.cpp's batched
        # rate with settling beside the decoding).
        for request in prompts[:1] or ([] if running else settling[:1]):
            tokens = request.kv if request.settling else request.prompt
            left = len(tokens) - request.pos
            take = _chunk(left, room)
            part = tokens[request.pos : request.pos + take]
            last = not request.settling and take == left
            calls.append([Feed(request.slot, part, request.pos, sample=last)])
        return calls

    def _advance(self, feeds: list[Feed], sampled: dict[int, int]) -> None:
        decoder = self._decoder
        for feed in feeds:
            request = self._active.get(feed.slot)
            if request is None:
                continue
            if request.settling:
                request.pos += len(feed.tokens)
                self.settle_tokens += len(feed.tokens)
                if request.pos >= len(request.kv):
                    self._store(request)
                    self._release(request)
                continue
            if request.pos < len(request.prompt):
                self.prefill_tokens += len(feed.tokens)
            if request.cache_key is not None:
                request.kv.extend(feed.tokens)
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
                request.unfed = token  # the next turn's history ends with it: settled with the rest
                self._finish(request, "length")
            else:
                request.pending = token

    def _finish(self, request: _Request, reason: FinishReason) -> None:
        # The incremental decoder hands out every complete character at once, so all it can still
        # hold is the start of a character cut off by max_tokens (or a cancel): that is dropped,
        # never shown as U+FFFD, which flushing it with final=True would give.
        request.text.reset()
        self._emit(request, TokenChunk("", reason, Usage(len(request.prompt), request.generated)))
        if reason != "cancelled" and self._settle(request):
            return
        self._release(request)

    # -- the conversation cache (scheduler thread) ------------------------------------------------
    def _keepable(self, request: _Request) -> bool:
        return (
            request.cache_key is not None
            and not request.cache_revoked
            and not self._closed
            and self._cache.enabled
            and request.pos > 0
        )

    def _settle(self, request: _Request) -> bool:
        """After an answer: make the conversation's cells the ones a prefill would make, then keep
        a copy (``_store``). True when that takes decode rounds (the slot stays busy until then).

        The prompt's cells already are (prompt chunks have two tokens or more, see ``_plan``), but
        the answer's were made one decode step at a time, by the matrix-vector kernels, and with
        them the next turn's answer could differ from an uncached one in a rare greedy tie. So the
        answer's cells are dropped and its tokens prefilled again, as a chunk of their own, after
        the answer has been sent: off the next turn's path, in rounds no prompt or answer needs. It is the
        work the next turn would otherwise do on its own path. A turn that arrives meanwhile takes
        the slot over (``_admit``); a slot needed by someone else is cut short (``_cut_settling``).

        The same chunk carries what the next turn is sure to begin with after the answer: the
        template's turn separator (``<|im_end|>\n<|im_start|>user\n``), and the answer's last token
        when max_tokens cut it (sampled and sent, never fed). A turn then prefills only the user's new
        words and the template's opening of the answer: 5 tokens fewer of about 20 for a short
        question to SmolLM2. If the next turn's prompt differs (an edited history, an answer that
        tokenises otherwise), the cells are used up to where it differs, as always.
        """
        if not self._keepable(request):
            return False
        exact = min(request.pos, len(request.prompt))
        tail = ([request.unfed] if request.unfed is not None else []) + self._separator
        if len(request.kv) + len(tail) < min(self._ctx, self._decoder.n_ctx_seq):  # room for a next turn
            request.kv.extend(tail)  # the tokens fed so far (len == pos), then the tail to settle
        todo = len(request.kv) - exact
        if todo == 0:
            self._store(request)
            return False
        start = exact if todo >= 2 else exact - 1  # re-decode two tokens at least (see _plan)
        self._decoder.trim_seq(request.slot, start)
        request.pos = start
        request.pending = None
        request.settling = True
        with self._wake:
            self._settling += 1
        return True

    def _cut_settling(self, request: _Request) -> None:
        """Keep only what a settling conversation has settled so far, and free its slot."""
        self._decoder.trim_seq(request.slot, request.pos)
        del request.kv[request.pos :]
        self._store(request)
        self._release(request)

    def _store(self, request: _Request) -> None:
        """Leave a copy of the request's cells (all made as a prefill makes them) for the next turn."""
        key = request.cache_key
        if key is None or not self._keepable(request):
            return
        state = self._decoder.save_seq(request.slot, self._cache.max_bytes)
        if state is None:
            return
        with self._wake:  # against evict(): a revoke seen here means no copy may stay
            if request.cache_revoked or self._closed:
                state.wipe()
            else:
                self._cache.put(key, request.kv[: request.pos], state)

    def _fail(self, feeds: list[Feed], exc: InferenceError) -> None:
        for feed in feeds:
            request = self._active.get(feed.slot)
            if request is not None:
                if not request.settling:  # a settling request's answer is already out
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
        self._decoder.close_slot(request.slot)  # the slot's cells are gone (a copy may be kept)
        self._order.remove(request)
        request.kv = []
        with self._wake:
            del self._active[request.slot]
            heapq.heappush(self._free_slots, request.slot)
            if request.settling:
                request.settling = False
                self._settling -= 1
            self._wake.notify_all()  # wait_idle
