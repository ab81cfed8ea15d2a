"""Conversation cache keys and their lifetimes, as pieces: derivation, the data-key cache's drop hook,
an attested session's issued keys. No server, no model."""

from __future__ import annotations

import os

import pytest

from nitro_llm.enclave.conversation_keys import SessionConversations, attested_cache_key, kms_cache_key
from nitro_llm.enclave.data_keys import DataKeyCache
from nitro_llm.protocol.kms_envelope import new_id

KEY_A, KEY_B = os.urandom(32), os.urandom(32)


def test_kms_key_is_per_data_key_and_conversation():
    conv = new_id()
    key = kms_cache_key(KEY_A, conv)
    assert key == kms_cache_key(KEY_A, conv) and len(key) == 32
    assert key != kms_cache_key(KEY_B, conv)  # another client's key, same conversation id
    assert key != kms_cache_key(KEY_A, new_id())
    assert KEY_A not in key and conv.encode() not in key


def test_the_protocols_never_share_a_key():
    conv = new_id()
    secret = conv.encode()[:32]
    assert kms_cache_key(KEY_A, conv) != attested_cache_key(KEY_A, b"", secret)


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_data_key_cache_reports_every_drop_before_wiping():
    dropped: list[tuple[bytes, str]] = []
    clock = Clock()
    cache = DataKeyCache(capacity=2, ttl_seconds=10, clock=clock, on_drop=lambda k, c: dropped.append((k, c)))
    assert cache.put(b"edk1", "c1", KEY_A)
    assert cache.put(b"edk1", "c1", KEY_A)  # the same conversation's key again: replaced, not dropped
    assert dropped == []
    cache.put(b"edk2", "c2", KEY_B)
    cache.put(b"edk3", "c3", KEY_B)  # pushes the least recently used (c1) out
    assert dropped == [(KEY_A, "c1")]
    clock.now = 11
    assert cache.get(b"edk2", "c2") is None  # expired
    assert dropped[-1] == (KEY_B, "c2")
    cache.clear()
    assert dropped[-1] == (KEY_B, "c3") and len(dropped) == 3


def test_data_key_cache_off_keeps_nothing():
    assert not DataKeyCache(capacity=0).put(b"edk", "c", KEY_A)
    assert not DataKeyCache(ttl_seconds=0).put(b"edk", "c", KEY_A)


def test_session_keys_are_per_conversation_and_per_session():
    one, two = SessionConversations(b"d" * 32), SessionConversations(b"d" * 32)
    conv = os.urandom(32)
    assert one.key_for(conv) == one.key_for(conv)
    assert one.key_for(conv) != one.key_for(os.urandom(32))
    assert one.key_for(conv) != two.key_for(conv)  # each session draws its own secret
    assert conv not in (one.key_for(conv) or b"")


def test_retiring_a_session_evicts_every_key_it_issued():
    evicted: list[bytes] = []
    session = SessionConversations(b"d" * 32)
    session.evict_with(evicted.append)
    keys = {session.key_for(os.urandom(32)) for _ in range(3)}
    assert session.retire() == 3
    assert set(evicted) == keys
    assert session.key_for(os.urandom(32)) is None  # a retired session keys nothing more


def test_keys_past_the_bound_are_evicted_not_forgotten():
    evicted: list[bytes] = []
    session = SessionConversations(b"d" * 32, capacity=2)
    session.evict_with(evicted.append)
    session.key_for(b"1" * 32)
    second = session.key_for(b"2" * 32)
    session.key_for(b"1" * 32)  # used again: now the most recent
    session.key_for(b"3" * 32)
    assert evicted == [second]
    assert len(session) == 2


def test_capacity_must_be_positive():
    with pytest.raises(ValueError):
        SessionConversations(b"d" * 32, capacity=0)
