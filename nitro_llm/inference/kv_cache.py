"""Per-conversation KV state kept between turns, so a chat does not prefill its whole history again.

What is kept: for each conversation key, the tokens whose KV cells a finished turn left behind
(its prompt and the answer tokens fed back) and a copy of those cells (llama.cpp's sequence state,
``LlamaBatchDecoder.save_seq``). The next turn of the same conversation restores the copy into
whatever slot it is given and prefills only what its prompt adds after the longest common prefix.

Isolation: the key is opaque and chosen by the caller (the enclave derives it from the
conversation's data key or session key), and an entry is only ever used for that exact key. There
is deliberately no lookup by prefix across keys: two tenants with the same system prompt never
share cells, because a shared prefix cache answers faster on a hit and so tells one user what
another has typed. (What every request may share lives outside this cache: the public prefix, cells
made from the model file alone before any request, see batching.py.)

Bounded: at most ``max_entries`` conversations and ``max_bytes`` of saved state, least recently
used out first, and an entry idle for ``ttl_seconds`` is dropped at the next access or sweep.
Every entry that leaves (evicted, replaced, expired, taken and used, cleared) is wiped: its saved
cells are overwritten with zeros and its token list emptied.

Why a copy and not a slot kept per conversation (slot affinity), measured on SmolLM2-135M with
one KV stream per sequence: copying a conversation's cells out takes about 6 ms and back in about
2 ms for 391 tokens (9 MB, 22.5 KB a token), against seconds to prefill them. Slot affinity would
cost no copy, but llama.cpp puts sequences into one micro-batch only when their ids are consecutive
(``llama_batch_allocr::split_equal``): four answers running in slots 0, 2, 4 and 6 took 101 ms a
decode step against 61 ms in slots 0-3, so conversations parked in slots would slow every batched
step under partial load, and could only ever be as many as the slots. With copies, slots are still
handed out lowest first and the cache bound is memory, not slots. (The one case a slot is reused in
place: a conversation's next turn that arrives while its cells are still in the slot, see
``BatchScheduler._admit``.)

Thread-safe: the scheduler thread takes and puts, any thread may ``evict``.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DEFAULT_CACHE_CONVERSATIONS = 64
DEFAULT_CACHE_BYTES = 256 * 1024 * 1024  # ~11k tokens of SmolLM2-135M state (22.5 KB a token)
DEFAULT_CACHE_TTL_SECONDS = 600.0  # as long as the enclave keeps a conversation's data key


class SavedState(Protocol):
    """A copy of one sequence's KV cells, owned by Python (not by llama.cpp)."""

    @property
    def nbytes(self) -> int: ...

    def wipe(self) -> None:
        """Overwrite the copy with zeros; it is useless afterwards."""
        ...


@dataclass(eq=False)
class CachedConversation:
    tokens: list[int] = field(repr=False)  # the tokens whose cells ``state`` holds, position 0 up
    state: SavedState = field(repr=False)
    expires: float = 0.0

    def wipe(self) -> None:
        self.state.wipe()
        self.tokens.clear()


def common_prefix(cached: Sequence[int], prompt: Sequence[int]) -> int:
    """How many leading tokens two token lists share."""
    n = min(len(cached), len(prompt))
    i = 0
    while i < n and cached[i] == prompt[i]:
        i += 1
    return i


class ConversationCache:
    def __init__(
        self,
        *,
        max_entries: int = DEFAULT_CACHE_CONVERSATIONS,
        max_bytes: int = DEFAULT_CACHE_BYTES,
        ttl_seconds: float | None = DEFAULT_CACHE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if max_entries < 0 or max_bytes < 0 or (ttl_seconds is not None and ttl_seconds <= 0):
            raise ValueError("max_entries >= 0, max_bytes >= 0 and ttl_seconds > 0 (or None) are required")
        self.max_entries = max_entries
        self.max_bytes = max_bytes
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, CachedConversation] = OrderedDict()  # least recent first
        self._bytes = 0
        self.evictions = 0  # entries dropped for room, age or by ``evict`` (not taken ones)

    @property
    def enabled(self) -> bool:
        return self.max_entries > 0 and self.max_bytes > 0

    def __len__(self) -> int:
        with self._lock:
            self._expire()
            return len(self._entries)

    @property
    def nbytes(self) -> int:
        with self._lock:
            self._expire()
            return self._bytes

    def __contains__(self, key: bytes) -> bool:
        with self._lock:
            self._expire()
            return key in self._entries

    def fits(self, nbytes: int) -> bool:
        return self.enabled and nbytes <= self.max_bytes

    def take(self, key: bytes) -> CachedConversation | None:
        """Remove and return the conversation's entry (the caller restores it, then wipes it)."""
        with self._lock:
            self._expire()
            entry = self._entries.pop(key, None)
            if entry is not None:
                self._bytes -= entry.state.nbytes
            return entry

    def put(self, key: bytes, tokens: list[int], state: SavedState) -> bool:
        """Keep ``state`` for ``key`` (replacing and wiping an older one); False, and ``state`` wiped,
        when it can never fit. Makes room by wiping the least recently used entries."""
        if not tokens or not self.fits(state.nbytes):
            state.wipe()
            return False
        expires = self._clock() + self._ttl if self._ttl is not None else float("inf")
        with self._lock:
            self._expire()
            old = self._entries.pop(key, None)
            if old is not None:
                self._bytes -= old.state.nbytes
                old.wipe()
            while self._entries and (
                len(self._entries) >= self.max_entries or self._bytes + state.nbytes > self.max_bytes
            ):
                self._drop(next(iter(self._entries)))
            self._entries[key] = CachedConversation(tokens, state, expires)
            self._bytes += state.nbytes
            return True

    def evict(self, key: bytes) -> bool:
        """Wipe the conversation's entry, if any."""
        with self._lock:
            if key not in self._entries:
                return False
            self._drop(key)
            return True

    def sweep(self) -> None:
        """Wipe the entries that have been idle longer than the TTL."""
        with self._lock:
            self._expire()

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    def _expire(self) -> None:
        if self._ttl is None:
            return
        now = self._clock()
        # Entries are in last-use order and share one TTL, so the expired ones are at the front.
        for _ in range(len(self._entries)):
            key, entry = next(iter(self._entries.items()))
            if entry.expires > now:
                return
            self._drop(key)

    def _drop(self, key: bytes) -> None:
        entry = self._entries.pop(key)
        self._bytes -= entry.state.nbytes
        self.evictions += 1
        entry.wipe()
