"""llama.cpp's batch API, one step at a time: several sequences share one ``llama_decode`` call.

This is the part of continuous batching that talks to llama.cpp (through llama-cpp-python's
low-level bindings); the scheduler that decides *what* goes into each step lives in
``batching.py``. One context holds ``n_seq`` sequences (llama.cpp sequence ids = our slot
numbers), each with its own KV stream of ``n_ctx_seq`` cells (``kv_unified = False``). A shared,
unified cache would need less memory, but then a sequence's attention sums run over cells laid
out differently depending on who else is in the cache, and greedy answers change with the load;
with one stream per sequence a batched answer is bit-for-bit the answer it gets alone (tested).
The price is memory: ``n_seq * n_ctx_seq`` cells (about 23 KB per cell for SmolLM2-135M, so 1.5
GB at 8 x 8192). A finished or cancelled sequence's cells are freed with ``llama_memory_seq_rm``.
Each slot has its own sampler chain, so greedy and seeded sampling stay per request.

A conversation's cells can outlive its turn as a copy (``save_seq``: llama.cpp's sequence state,
about 22.5 KB a token for SmolLM2-135M, copied in a few milliseconds) that a later turn restores
into any free slot (``restore_seq``); see ``kv_cache.py`` for why a copy and not a kept slot.

Prompts are rendered with the GGUF's own chat template through llama-cpp-python's
``Jinja2ChatFormatter`` — the same renderer ``Llama.create_chat_completion`` uses — so answers
match the single-stream engine's. Not thread-safe: one scheduler thread drives ``step``;
``prompt_tokens`` (rendering and tokenising) may run on any thread.
"""

from __future__ import annotations

import ctypes
import logging
import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from nitro_llm.inference.errors import ContextOverflowError, EngineUnavailableError, InferenceError
from nitro_llm.inference.kv_cache import common_prefix
from nitro_llm.protocol.messages import Message

DEFAULT_N_BATCH = 512
_PIECE_BUFFER = 256
_META_BUFFER = 64 * 1024
_backend_lock = threading.Lock()
_backend_ready = False


@dataclass(frozen=True)
class Sampling:
    """How one sequence picks its next token. Temperature 0 is greedy (argmax), like the
    single-stream engine's ``top_k=1``; otherwise llama-cpp-python's default chain with a seed."""

    temperature: float = 0.0
    seed: int = 0
    top_k: int = 40
    top_p: float = 0.95
    min_p: float = 0.05


@dataclass(frozen=True)
class Feed:
    """What one slot contributes to a step: ``tokens`` at positions ``pos, pos+1, ...``; when
    ``sample`` is set the step samples this slot's next token from the logits of the last one."""

    slot: int
    tokens: Sequence[int]
    pos: int
    sample: bool


class SeqState:
    """One sequence's KV cells copied out of llama.cpp into memory Python owns (and can wipe)."""

    def __init__(self, size: int) -> None:
        self._buffer = (ctypes.c_uint8 * size)()
        self.nbytes = 0  # bytes llama.cpp wrote

    def wipe(self) -> None:
        ctypes.memset(self._buffer, 0, len(self._buffer))
        self.nbytes = 0

    def is_wiped(self) -> bool:
        return self.nbytes == 0 and not any(bytes(self._buffer))


def available_cpus() -> int:
    """The CPUs this process may run on (an enclave's vCPUs; a container's CPU set; its affinity
    mask). Measured on two otherwise idle cores, two threads prefill 1.8 times and decode 1.4 times
    as fast as one. But llama.cpp's threads spin at each of the graph's barriers, so on cores
    another busy thread shares they lose badly (0.35 and 0.15 times one thread here): the enclave
    sizes its thread count from this with a margin (nitro_llm/enclave/threads.py)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # not on Linux
        return max(1, os.cpu_count() or 1)


def load_llama_cpp() -> Any:
    """llama_cpp, its backend initialised once and its log quiet."""
    global _backend_ready
    try:
        import llama_cpp
    except ImportError:
        raise EngineUnavailableError("llama-cpp-python is not installed") from None
    with _backend_lock:
        if not _backend_ready:
            # llama.cpp logs through this logger; below ERROR it is chatter (as with Llama(verbose=False))
            logging.getLogger("llama-cpp-python").setLevel(logging.ERROR)
            llama_cpp.llama_backend_init()
            _backend_ready = True
    return llama_cpp


class LlamaBatchDecoder:
    def __init__(
        self,
        model_path: Path,
        *,
        n_seq: int,
        n_ctx_seq: int,
        n_threads: int | None = None,
        n_threads_batch: int | None = None,
        n_batch: int = DEFAULT_N_BATCH,
    ) -> None:
        """``n_threads`` None (or 0): one per CPU this process may use (``available_cpus``)."""
        n_threads = n_threads or available_cpus()
        if n_seq < 1 or n_ctx_seq < 64 or n_threads < 1 or n_batch < n_seq:
            raise ValueError("n_seq >= 1, n_ctx_seq >= 64, n_threads >= 1 and n_batch >= n_seq are required")
        lc = load_llama_cpp()
        self._lc = lc
        mparams = lc.llama_model_default_params()
        model = lc.llama_model_load_from_file(str(model_path).encode(), mparams)
        if not model:
            raise InferenceError(
                f"llama.cpp could not load {model_path.name}",
                hint="check that the file is a GGUF model: nitro-llm model check",
            )
        self._model = model
        cparams = lc.llama_context_default_params()
        cparams.n_ctx = n_ctx_seq * n_seq
        cparams.n_batch = n_batch
        cparams.n_ubatch = n_batch
        cparams.n_seq_max = n_seq
        cparams.kv_unified = False  # one KV stream per sequence: batch-invariant answers (see above)
        cparams.n_threads = n_threads
        cparams.n_threads_batch = n_threads_batch or n_threads
        cparams.no_perf = True
        # llama.cpp's default is "auto" (on, on CPU); llama-cpp-python's Llama turns it off. Off here
        # too, so batched answers match the single-stream engine's token for token.
        cparams.flash_attn_type = lc.LLAMA_FLASH_ATTN_TYPE_DISABLED
        ctx = lc.llama_init_from_model(model, cparams)
        if not ctx:
            lc.llama_model_free(model)
            raise InferenceError(
                "llama.cpp could not create a context", hint="lower --ctx or --batch-size (memory)"
            )
        self._ctx = ctx
        self._memory = lc.llama_get_memory(ctx)
        self._vocab = lc.llama_model_get_vocab(model)
        self.n_seq = n_seq
        self.n_ctx_seq = int(lc.llama_n_ctx_seq(ctx))
        self.n_batch = n_batch
        self._batch = lc.llama_batch_init(n_batch, 0, 1)
        self._samplers: dict[int, object] = {}
        self._piece = ctypes.create_string_buffer(_PIECE_BUFFER)
        self._pieces: dict[int, bytes] = {}
        self._eog: dict[int, bool] = {}
        self._formatter = self._chat_formatter()
        self._closed = False

    # -- prompts (any thread) ---------------------------------------------------------------------
    def _meta(self, key: str) -> str | None:
        buf = ctypes.create_string_buffer(_META_BUFFER)
        n = self._lc.llama_model_meta_val_str(self._model, key.encode(), buf, _META_BUFFER)
        return buf.value.decode("utf-8", "replace") if n >= 0 else None

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        raw = self._lc.llama_vocab_get_text(self._vocab, token)
        return raw.decode("utf-8", "replace") if raw else ""

    def _chat_formatter(self) -> object | None:
        template = self._meta("tokenizer.chat_template")
        if not template:
            return None
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        eos = self._lc.llama_vocab_eos(self._vocab)
        bos = self._lc.llama_vocab_bos(self._vocab)
        return Jinja2ChatFormatter(
            template=template, eos_token=self._token_text(eos), bos_token=self._token_text(bos)
        )

    def tokenize(self, text: str, *, add_special: bool, parse_special: bool) -> list[int]:
        data = text.encode("utf-8")
        room = len(data) + 16
        tokens = (self._lc.llama_token * room)()
        n = self._lc.llama_tokenize(self._vocab, data, len(data), tokens, room, add_special, parse_special)
        if n < 0:
            raise InferenceError("the tokenizer produced more tokens than expected")
        return list(tokens[:n])

    def prompt_tokens(self, messages: Sequence[Message]) -> list[int]:
        """The chat rendered by the model's template, as tokens (special tokens parsed, no extra BOS:
        the template writes its own, as in ``create_chat_completion``). A model without a template
        gets plain ``role: content`` lines — enough for benchmarks on converted weights."""
        if self._formatter is not None:
            rendered = self._formatter(messages=[m.to_dict() for m in messages])  # type: ignore[operator]
            return self.tokenize(rendered.prompt, add_special=False, parse_special=True)
        text = "".join(f"{m.role}: {m.content}\n" for m in messages) + "assistant:"
        return self.tokenize(text, add_special=True, parse_special=False)

    def public_prefix(self) -> list[int]:
        """The tokens the model's own chat template puts before any user's words: the longest
        prefix shared by the prompts of a few one-message chats that have nothing else in common.
        It depends on the model file alone (its template, its tokenizer), never on a request, so
        the scheduler may prefill it once and reuse it for everyone (batching.py, "public prefix")."""
        probes = [self.prompt_tokens([Message("user", text)]) for text in ("a", "Z", "7", "?")]
        shared = min(common_prefix(probes[0], other) for other in probes[1:])
        return probes[0][:shared]

    def turn_separator(self) -> list[int]:
        """The tokens the template writes after an answer's text and before the next user's words
        (SmolLM2: ``<|im_end|>\n<|im_start|>user\n``): a conversation's next turn is sure to contain
        them right after the answer, so the scheduler prefills them with the answer's cells, off the
        next turn's path. Empty when the template does not render one chat as the prefix of its
        continuation (then there is nothing certain to prefill)."""
        head = self.prompt_tokens([Message("user", "a")]) + self.tokenize(
            "b", add_special=False, parse_special=False
        )
        tails = []
        for text in ("a", "Z", "7", "?"):
            chat = self.prompt_tokens(
                [Message("user", "a"), Message("assistant", "b"), Message("user", text)]
            )
            if chat[: len(head)] != head:
                return []
            tails.append(chat[len(head) :])
        return tails[0][: min(common_prefix(tails[0], other) for other in tails[1:])]

    # -- tokens out -------------------------------------------------------------------------------
    def piece(self, token: int) -> bytes:
        """The bytes of one token (possibly part of a UTF-8 character); control tokens are empty.

        Memoised (at most one entry per vocabulary token): every ctypes call releases the GIL, and
        between decode steps the scheduler thread should not hand it to the streams' threads
        once per token to ask the same question again.
        """
        cached = self._pieces.get(token)
        if cached is not None:
            return cached
        n = self._lc.llama_token_to_piece(self._vocab, token, self._piece, _PIECE_BUFFER, 0, False)
        if n < 0:
            big = ctypes.create_string_buffer(-n)
            n = self._lc.llama_token_to_piece(self._vocab, token, big, -n, 0, False)
            out = big.raw[:n]
        else:
            out = self._piece.raw[:n]
        self._pieces[token] = out
        return out

    def is_end(self, token: int) -> bool:
        cached = self._eog.get(token)
        if cached is None:
            cached = self._eog[token] = bool(self._lc.llama_vocab_is_eog(self._vocab, token))
        return cached

    # -- sequences (scheduler thread) -------------------------------------------------------------
    def open_slot(self, slot: int, sampling: Sampling) -> None:
        """A fresh sequence in ``slot``: its old cells dropped, a new sampler chain."""
        if not 0 <= slot < self.n_seq:
            raise ValueError("slot out of range")
        self.close_slot(slot)
        self.reset_sampler(slot, sampling)

    def reset_sampler(self, slot: int, sampling: Sampling) -> None:
        """A new sampler chain for ``slot``; its cells are left as they are."""
        lc = self._lc
        old = self._samplers.pop(slot, None)
        if old is not None:
            lc.llama_sampler_free(old)
        chain = lc.llama_sampler_chain_init(lc.llama_sampler_chain_default_params())
        if sampling.temperature == 0:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_greedy())
        else:
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_k(sampling.top_k))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_top_p(sampling.top_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_min_p(sampling.min_p, 1))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_temp(float(sampling.temperature)))
            lc.llama_sampler_chain_add(chain, lc.llama_sampler_init_dist(sampling.seed & 0xFFFFFFFF))
        self._samplers[slot] = chain

    def close_slot(self, slot: int) -> None:
        """Free the slot's KV cells (removing a whole sequence never fails) and its sampler."""
        self._lc.llama_memory_seq_rm(self._memory, slot, -1, -1)
        chain = self._samplers.pop(slot, None)
        if chain is not None:
            self._lc.llama_sampler_free(chain)

    def trim_seq(self, slot: int, keep: int) -> bool:
        """Drop ``slot``'s cells from position ``keep`` on (all of them for 0)."""
        return bool(self._lc.llama_memory_seq_rm(self._memory, slot, max(0, keep), -1))

    def seq_pos_max(self, slot: int) -> int:
        """The highest position with a KV cell in ``slot``; -1 when the sequence holds none."""
        return int(self._lc.llama_memory_seq_pos_max(self._memory, slot))

    def save_seq(self, slot: int, max_bytes: int) -> SeqState | None:
        """A copy of ``slot``'s KV cells, or None when it is empty, larger than ``max_bytes`` or
        llama.cpp fails to write it. The slot itself is left as it is."""
        lc = self._lc
        size = int(lc.llama_state_seq_get_size(self._ctx, slot))
        if size <= 0 or size > max_bytes:
            return None
        state = SeqState(size)
        written = int(lc.llama_state_seq_get_data(self._ctx, state._buffer, size, slot))
        if written <= 0:
            state.wipe()
            return None
        state.nbytes = written
        return state

    def restore_seq(self, slot: int, state: SeqState, keep: int) -> bool:
        """Load a saved copy into the (empty) ``slot`` and keep only positions ``0 .. keep-1``.
        False, with the slot emptied again, when llama.cpp refuses (no room, a different model)."""
        lc = self._lc
        if state.nbytes <= 0 or keep <= 0:
            return False
        lc.llama_memory_seq_rm(self._memory, slot, -1, -1)
        read = int(lc.llama_state_seq_set_data(self._ctx, state._buffer, state.nbytes, slot))
        ok = read > 0 and self.seq_pos_max(slot) >= keep - 1
        ok = ok and bool(lc.llama_memory_seq_rm(self._memory, slot, keep, -1))
        if not ok:
            lc.llama_memory_seq_rm(self._memory, slot, -1, -1)
        return ok

    def step(self, feeds: Sequence[Feed]) -> dict[int, int]:
        """One ``llama_decode`` over every feed; returns the sampled token per sampling slot.

        Raises ``ContextOverflowError`` when a KV stream has no room (llama.cpp's return 1), so the
        scheduler can fail just the sequences concerned; anything else is an ``InferenceError``.
        """
        lc = self._lc
        batch = self._batch
        n = 0
        sample_at: list[tuple[int, int]] = []
        for feed in feeds:
            last = len(feed.tokens) - 1
            for i, token in enumerate(feed.tokens):
                if n >= self.n_batch:
                    raise ValueError("a step holds at most n_batch tokens")
                batch.token[n] = token
                batch.pos[n] = feed.pos + i
                batch.n_seq_id[n] = 1
                batch.seq_id[n][0] = feed.slot
                want = feed.sample and i == last
                batch.logits[n] = 1 if want else 0
                if want:
                    sample_at.append((feed.slot, n))
                n += 1
        if n == 0:
            return {}
        batch.n_tokens = n
        rc = lc.llama_decode(self._ctx, batch)
        if rc == 1:
            raise ContextOverflowError("a sequence's KV cache has no room for this step")
        if rc != 0:
            raise InferenceError(f"llama_decode failed (code {rc})")
        out: dict[int, int] = {}
        for slot, index in sample_at:
            out[slot] = int(lc.llama_sampler_sample(self._samplers[slot], self._ctx, index))
        return out

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        lc = self._lc
        for chain in self._samplers.values():
            lc.llama_sampler_free(chain)
        self._samplers.clear()
        lc.llama_batch_free(self._batch)
        lc.llama_free(self._ctx)
        lc.llama_model_free(self._model)


def check_fits(prompt: int, ctx: int) -> None:
    """A prompt must leave room for at least one answer token; otherwise it can never run."""
    if prompt + 1 > ctx:
        raise ContextOverflowError("the conversation does not fit in the model's context window")
