"""A bounded, expiring cache of data keys released by KMS, so a multi-turn chat costs one Decrypt.

Keyed by SHA-256 over the encrypted data key and the conversation id (the encryption context KMS
checked), so a cached key is only reused for exactly what KMS released it for. Entries expire after
a TTL and the least recently used is dropped when full; dropped keys are overwritten in place (best
effort in Python: earlier copies made by libraries cannot be reached).
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections import OrderedDict
from collections.abc import Callable

DEFAULT_CAPACITY = 1024
DEFAULT_TTL_SECONDS = 600.0


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
    ) -> None:
        if capacity < 0 or ttl_seconds < 0:
            raise ValueError("capacity and ttl_seconds must not be negative")
        self._capacity = capacity
        self._ttl = ttl_seconds
        self._clock = clock
        self._lock = threading.Lock()
        self._entries: OrderedDict[bytes, tuple[float, bytearray]] = OrderedDict()

    def get(self, edk: bytes, conversation_id: str) -> bytes | None:
        key = cache_key(edk, conversation_id)
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires, data_key = entry
            if self._clock() >= expires:
                self._drop(key)
                return None
            self._entries.move_to_end(key)
            return bytes(data_key)

    def put(self, edk: bytes, conversation_id: str, data_key: bytes) -> None:
        if self._capacity == 0 or self._ttl == 0:
            return  # caching disabled: every request goes to KMS
        key = cache_key(edk, conversation_id)
        with self._lock:
            if key in self._entries:
                self._drop(key)
            self._entries[key] = (self._clock() + self._ttl, bytearray(data_key))
            while len(self._entries) > self._capacity:
                self._drop(next(iter(self._entries)))

    def clear(self) -> None:
        with self._lock:
            for key in list(self._entries):
                self._drop(key)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def _drop(self, key: bytes) -> None:
        _, data_key = self._entries.pop(key)
        data_key[:] = bytes(len(data_key))
