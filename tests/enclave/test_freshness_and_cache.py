import pytest

from nitro_llm.enclave.data_keys import DataKeyCache
from nitro_llm.enclave.errors import ReplayCacheFullError, ReplayedRequestError, StaleRequestError
from nitro_llm.enclave.freshness import FreshnessGuard


class Clock:
    def __init__(self, now):
        self.now = now

    def __call__(self):
        return self.now


def test_window_edges():
    clock = Clock(1_000_000_000)
    guard = FreshnessGuard(window_seconds=120, clock_ms=clock)
    clock.now += 10_000_000  # long after start
    for ts in (clock.now - 120_000, clock.now + 120_000, clock.now):
        guard.check_fresh("a" * 32, ts)
    for ts in (clock.now - 120_001, clock.now + 120_001):
        with pytest.raises(StaleRequestError):
            guard.check_fresh("a" * 32, ts)


def test_replay_entries_expire_only_when_stale():
    clock = Clock(1_000_000)
    guard = FreshnessGuard(window_seconds=10, clock_ms=clock)
    ts = clock.now + 5_000  # a client clock 5 s ahead
    guard.check_fresh("r1", ts)
    guard.claim("r1", ts)
    with pytest.raises(ReplayedRequestError):
        guard.claim("r1", ts)
    clock.now = ts + 10_000  # still fresh at the edge: still remembered
    with pytest.raises(ReplayedRequestError):
        guard.check_fresh("r1", ts)
    clock.now = ts + 10_001  # now stale, so forgetting it is safe
    assert len(guard) == 0
    with pytest.raises(StaleRequestError):
        guard.check_fresh("r1", ts)


def test_full_replay_cache_refuses_instead_of_forgetting():
    clock = Clock(1_000_000)
    guard = FreshnessGuard(window_seconds=10, capacity=2, clock_ms=clock)
    guard.claim("a", clock.now)
    guard.claim("b", clock.now)
    with pytest.raises(ReplayCacheFullError) as err:
        guard.claim("c", clock.now)
    assert err.value.retryable
    with pytest.raises(ReplayedRequestError):
        guard.claim("a", clock.now)  # nothing was evicted to make room
    clock.now += 10_001
    guard.claim("c", clock.now)


def test_data_key_cache_ttl_lru_and_binding():
    clock = Clock(0.0)
    cache = DataKeyCache(capacity=2, ttl_seconds=60, clock=clock)
    cache.put(b"edk1", "c1", b"k" * 32)
    assert cache.get(b"edk1", "c1") == b"k" * 32
    assert cache.get(b"edk1", "c2") is None  # bound to the conversation KMS checked
    assert cache.get(b"edk", "1c1") is None  # no ambiguity between edk and id boundaries
    cache.put(b"edk2", "c2", b"m" * 32)
    cache.get(b"edk1", "c1")  # edk1 most recently used
    cache.put(b"edk3", "c3", b"n" * 32)  # evicts edk2
    assert cache.get(b"edk2", "c2") is None and cache.get(b"edk1", "c1") is not None
    clock.now = 61.0
    assert cache.get(b"edk1", "c1") is None and len(cache) == 1


def test_dropped_keys_are_overwritten():
    cache = DataKeyCache(capacity=1, ttl_seconds=60)
    cache.put(b"e1", "c", b"k" * 32)
    stored = next(iter(cache._entries.values()))[1]
    cache.put(b"e2", "c", b"m" * 32)
    assert stored == bytearray(32)


def test_disabled_cache_stores_nothing():
    cache = DataKeyCache(capacity=10, ttl_seconds=0)
    cache.put(b"e", "c", b"k" * 32)
    assert cache.get(b"e", "c") is None
