"""The conversation cache's bookkeeping, without a model: bounds, LRU, TTL, explicit eviction, and
that every entry leaving it is wiped."""

import pytest

from nitro_llm.inference.kv_cache import ConversationCache, common_prefix


class FakeState:
    def __init__(self, nbytes):
        self.nbytes = nbytes
        self.wiped = False

    def wipe(self):
        self.wiped = True
        self.nbytes = 0


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_common_prefix():
    assert common_prefix([1, 2, 3], [1, 2, 4, 5]) == 2
    assert common_prefix([1, 2], [1, 2, 3]) == 2
    assert common_prefix([], [1]) == 0
    assert common_prefix([9], [1]) == 0


def test_take_returns_only_the_same_key_and_removes_it():
    cache = ConversationCache(max_entries=4, max_bytes=1000)
    state = FakeState(10)
    assert cache.put(b"a", [1, 2, 3], state)
    assert cache.take(b"b") is None  # another key never sees it, whatever it shares
    entry = cache.take(b"a")
    assert entry is not None and entry.state is state and entry.tokens == [1, 2, 3]
    assert len(cache) == 0 and cache.nbytes == 0
    assert cache.take(b"a") is None


def test_least_recently_used_goes_first_and_is_wiped():
    cache = ConversationCache(max_entries=2, max_bytes=1000)
    a, b, c = FakeState(10), FakeState(10), FakeState(10)
    cache.put(b"a", [1], a)
    cache.put(b"b", [1], b)
    cache.put(b"a", [1, 2], FakeState(10))  # a used again (replaced: the old copy is wiped)
    assert a.wiped and not b.wiped
    cache.put(b"c", [1], c)  # full: b is the least recently used
    assert b.wiped and not c.wiped
    assert b"b" not in cache and b"a" in cache and b"c" in cache
    assert cache.evictions == 1


def test_bytes_bound():
    cache = ConversationCache(max_entries=10, max_bytes=100)
    first, second = FakeState(60), FakeState(50)
    assert cache.put(b"a", [1], first)
    assert cache.put(b"b", [1], second)  # 110 > 100: a goes
    assert first.wiped and cache.nbytes == 50 and len(cache) == 1
    huge = FakeState(101)
    assert not cache.put(b"c", [1], huge)  # can never fit: refused, and wiped
    assert huge.wiped and b"c" not in cache and b"b" in cache


def test_evict_wipes_at_once():
    cache = ConversationCache(max_entries=4, max_bytes=1000)
    state = FakeState(10)
    tokens = [1, 2, 3]
    cache.put(b"a", tokens, state)
    assert cache.evict(b"a")
    assert state.wiped and tokens == [] and b"a" not in cache
    assert not cache.evict(b"a")


def test_idle_entries_expire_and_are_wiped():
    clock = Clock()
    cache = ConversationCache(max_entries=4, max_bytes=1000, ttl_seconds=10, clock=clock)
    old, new = FakeState(10), FakeState(10)
    cache.put(b"old", [1], old)
    clock.now = 6
    cache.put(b"new", [1], new)
    clock.now = 11
    cache.sweep()
    assert old.wiped and not new.wiped and len(cache) == 1
    clock.now = 17
    assert cache.take(b"new") is None and new.wiped


def test_disabled_and_clear():
    off = ConversationCache(max_entries=0, max_bytes=1000)
    state = FakeState(1)
    assert not off.enabled and not off.put(b"a", [1], state) and state.wiped
    cache = ConversationCache(max_entries=4, max_bytes=1000)
    states = [FakeState(1) for _ in range(3)]
    for i, s in enumerate(states):
        cache.put(bytes([i]), [1], s)
    cache.clear()
    assert all(s.wiped for s in states) and len(cache) == 0 and cache.nbytes == 0
    with pytest.raises(ValueError):
        ConversationCache(max_entries=-1)
