"""The keys under which the engine keeps a conversation's KV cells between turns, and their lifetimes.

A key is opaque to the engine (inference/kv_cache.py uses it only for exact lookups), and must be
per conversation: a cache hit makes an answer start sooner, so a key two conversations shared would
tell one of them what the other had typed. Each key is therefore a MAC, computed inside the enclave,
of something only that conversation's client and this enclave know, under a label that names the
protocol, so the two protocols can never meet on one key:

- kms: HMAC-SHA256(data key, label || "kms" || conversation id). The data key is the conversation's
  own (KMS released it for that conversation id, bound in the encryption context) and only the
  client and attested enclaves ever hold it. The key lives as long as the data key stays in the
  enclave's cache: when ``DataKeyCache`` drops it (TTL, LRU, cleared), the server evicts the cells.
- attested: HMAC-SHA256(session secret, label || "attested" || descriptor hash || conversation),
  where ``conversation`` is the client's 32 random bytes sealed inside every turn (HPKE: the host
  never sees them) and the session secret is drawn by the enclave for each HPKE session and never
  leaves it. The keys a session issued are remembered (bounded), so retiring the session (a rotated
  key) evicts them all.

No conversation secret, no key: such a request reuses nothing and leaves nothing behind. Nor does a
request sealed ``one_shot`` (protocol/messages.py), whatever it carries: its client has said no turn
follows, so kept cells would be settled and held for nothing; in kms its data key is not cached
either: nothing holds the key once the request is open and its answer's key derived, rather than
for the cache's ten minutes.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import threading
from collections import OrderedDict
from collections.abc import Callable

LABEL = b"nitro-llm kv-cache v1"
SESSION_SECRET_SIZE = 32
DEFAULT_TRACKED_KEYS = 4096  # per attested session; far more than the engine keeps (64 by default)

Evict = Callable[[bytes], object]


def kms_cache_key(data_key: bytes | bytearray, conversation_id: str) -> bytes:
    """The kms protocol's key for a conversation: only a holder of its data key can derive it."""
    message = LABEL + b"\x00kms\x00" + conversation_id.encode("utf-8")
    return hmac.new(bytes(data_key), message, hashlib.sha256).digest()


def attested_cache_key(
    session_secret: bytes | bytearray, descriptor_hash: bytes, conversation: bytes
) -> bytes:
    """The attested protocol's key: the client's secret, bound to the session it was sealed to."""
    message = LABEL + b"\x00attested\x00" + descriptor_hash + conversation
    return hmac.new(bytes(session_secret), message, hashlib.sha256).digest()


class SessionConversations:
    """One attested session's conversation keys: derived under a secret drawn for the session, and
    remembered so that ``retire`` evicts every one of them.

    Bounded: past ``capacity`` keys the least recently used is forgotten and evicted at once, so no
    cells can outlive the session unremembered. Thread-safe.
    """

    def __init__(self, descriptor_hash: bytes, *, capacity: int = DEFAULT_TRACKED_KEYS) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._descriptor_hash = descriptor_hash
        self._secret = bytearray(os.urandom(SESSION_SECRET_SIZE))
        self._capacity = capacity
        self._lock = threading.Lock()
        self._issued: OrderedDict[bytes, None] = OrderedDict()
        self._retired = False
        self._evict: Evict = lambda _key: None

    def evict_with(self, evict: Evict) -> None:
        """What forgetting a key does (the server passes its engine's ``evict``)."""
        self._evict = evict

    def key_for(self, conversation: bytes) -> bytes | None:
        """The cache key for a conversation of this session; None once the session is retired."""
        dropped: list[bytes] = []
        with self._lock:
            if self._retired:
                return None
            key = attested_cache_key(self._secret, self._descriptor_hash, conversation)
            self._issued[key] = None
            self._issued.move_to_end(key)
            while len(self._issued) > self._capacity:
                dropped.append(self._issued.popitem(last=False)[0])
        for old in dropped:
            self._evict(old)
        return key

    def __len__(self) -> int:
        with self._lock:
            return len(self._issued)

    def retire(self) -> int:
        """Wipe the session secret and evict every conversation it keyed; how many keys it had."""
        with self._lock:
            self._retired = True
            self._secret[:] = bytes(len(self._secret))
            keys = list(self._issued)
            self._issued.clear()
        for key in keys:
            self._evict(key)
        return len(keys)
