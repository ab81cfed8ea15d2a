"""A bounded, expiring cache of data keys released by KMS, so a multi-turn chat costs one Decrypt.

Keyed by SHA-256 over the encrypted data key and the conversation id (the encryption context KMS
checked), so a cached key is only reused for exactly what KMS released it for. Entries expire after
a TTL and the least recently used is dropped when full; dropped keys are overwritten in place (best
effort in Python: earlier copies made by libraries cannot be reached).

``on_drop(data_key, conversation_id)`` is called for each entry that leaves (expired, pushed out,
cleared), just before its key is overwritten: the server evicts the engine's KV cells for that
conversation there (enclave/conversation_keys.py), so the cells never outlive the key they are
keyed by. An entry replaced by the same conversation's key (two first turns racing) is not a drop.
The hook runs under the cache's lock: it must not call back into the cache.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_CAPACITY = 1024
DEFAULT_TTL_SECONDS = 600.0

OnDrop = Callable[[bytes, str], object]


def cache_key(edk: bytes, conversation_id: str) -> bytes:
    conversation = conversation_id.encode("utf-8")
    return hashlib.sha256(len(edk).to_bytes(4, "big") + edk + conversation).digest()


class DataKeyCache:
    def __init__(
        self,
        *,
        capacity: int = DEFAULT_CAPACITY,
        ttl_seconds: float = DEFAULT_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
        on_drop: OnDrop | None = None,
    ) -> None:
        if capacity < 0 or ttl_seconds < 0:
            raise ValueError("capacity and ttl_seconds must not be negative")
        self._capacity = capacity
        self._ttl = ttl_seconds
        self._clock = clock
        self._on_drop = on_drop
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, bytearray, str]] = OrderedDict()

    @property
    def enabled(self) -> bool:
        return self._capacity > 0 and self._ttl > 0

    def get(self, edk: bytes, conversation_id: str) -> bytes | None:
        key = cache_key(edk, conversation_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, data_key, _ = entry
            if self._clock() >= expires:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return bytes(data_key)

    def put(self, edk: bytes, conversation_id: str, data_key: bytes) -> bool:
        """Keep the key; False when caching is off (then nothing outlives the request either)."""
        if not self.enabled:
            return False  # every request goes to KMS
        key = cache_key(edk, conversation_id)
        with self._lock:
            old = self._entries.pop(key, None)
            if old is not None:  # the same conversation's key again: replaced, not dropped
                old[1][:] = bytes(len(old[1]))
            self._entries[key] = (self._clock() + self._ttl, bytearray(data_key), conversation_id)
            while len(self._entries) > self._capacity:
                self._drop(next(iter(self._entries)))
        return True

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _drop(self, key: bytes) -> None:
        _, data_key, conversation_id = self._entries.pop(key)
        try:
            if self._on_drop is not None:
                self._on_drop(bytes(data_key), conversation_id)
        finally:
            data_key[:] = bytes(len(data_key))
