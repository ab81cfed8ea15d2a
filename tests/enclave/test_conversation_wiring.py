"""The enclave server hands the engine one opaque cache key per conversation, in both protocols, and
evicts it when the secret it is derived from goes. The engine here records what it is handed (the
model's side is tests/enclave/test_conversation_model.py and tests/inference)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.inference.engine import TokenChunk, Usage
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.attested import SessionDescriptor, new_conversation, seal_request
from nitro_llm.protocol.attested_wire import attest_frame, read_attestation_frame

from .conftest import Conversation, start_enclave

QUESTION = [{"role": "user", "content": "the same first question"}]


class RecordingEngine:
    """The engine seam: answers "ok" and records each request's cache key and each eviction."""

    schedules_itself = True
    name = "recorder"
    queued = 0

    def __init__(self) -> None:
        self.keys: list[bytes | None] = []
        self.evicted: list[bytes] = []

    def generate(self, messages, *, cancel=None, cache_key=None, **sampling) -> Iterator[TokenChunk]:
        self.keys.append(cache_key)
        yield TokenChunk("ok")
        yield TokenChunk("", "stop", Usage(1, 1))

    def evict(self, cache_key: bytes) -> bool:
        self.evicted.append(cache_key)
        return True

    def cache_stats(self) -> dict[str, int]:
        return {"hits": 7, "misses": 2, "prefill_tokens": 5}

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(tmp_path):
    started = []

    def make(config: EnclaveConfig | None = None, *, attested: bool = False):
        engine = RecordingEngine()
        sub = tmp_path / f"e{len(started)}"
        sub.mkdir()
        enclave = start_enclave(sub, engine=engine, config=config, attested=attested)
        enclave.give_credentials()
        started.append(enclave)
        return enclave, engine

    yield make
    for enclave in started:
        enclave.server.stop()


def kms_turn(enclave, conversation: Conversation, *, one_shot: bool = False) -> None:
    header, envelope = conversation.seal(QUESTION, one_shot=one_shot)
    assert conversation.read_answer(header, enclave.call(frame_kinds.infer_frame(envelope.to_cbor()))) == "ok"


def descriptor(enclave, suite: str = "x25519") -> SessionDescriptor:
    (reply,) = enclave.call(attest_frame(os.urandom(16), suite))
    _document, raw = read_attestation_frame(reply)
    return SessionDescriptor.from_cbor(raw)


def attested_turn(
    enclave, session: SessionDescriptor, conversation: bytes | None, *, one_shot: bool = False
) -> list[dict]:
    request = {**_request(), "messages": QUESTION, **({"one_shot": True} if one_shot else {})}
    sealed = seal_request(session, request, conversation=conversation)
    replies = enclave.call(frame_kinds.infer_frame(sealed.envelope.to_cbor()))
    if replies[-1]["t"] != "error":
        opener = sealed.response_opener()
        assert "".join(opener.open(f)["text"] for f in replies) == "ok"
    return replies


def _request() -> dict:
    return {"max_tokens": 8, "temperature": 0.0}


def test_kms_turns_of_a_conversation_share_one_key_no_other_conversation_gets(recorded):
    enclave, engine = recorded()
    mine, theirs = Conversation(enclave.kms), Conversation(enclave.kms)
    kms_turn(enclave, mine)
    kms_turn(enclave, mine)
    kms_turn(enclave, theirs)  # the same question, another client's conversation
    first, second, other = engine.keys
    assert first is not None and len(first) == 32 and first == second
    assert other is not None and other != first
    assert mine.data_key not in first and mine.conversation_id.encode() not in first


def test_kms_cells_are_evicted_when_the_data_key_is_dropped(recorded):
    enclave, engine = recorded(EnclaveConfig(engine="echo", data_key_cache_size=1))
    first, second = Conversation(enclave.kms), Conversation(enclave.kms)
    kms_turn(enclave, first)
    assert engine.evicted == []
    kms_turn(enclave, second)  # the one-entry data-key cache drops the first conversation's key
    assert engine.evicted == [engine.keys[0]]


def test_kms_keeps_no_cells_when_it_keeps_no_data_keys(recorded):
    enclave, engine = recorded(EnclaveConfig(engine="echo", data_key_ttl_seconds=0))
    conversation = Conversation(enclave.kms)
    kms_turn(enclave, conversation)
    kms_turn(enclave, conversation)
    assert engine.keys == [None, None]


def test_attested_key_comes_from_the_sealed_conversation_secret(recorded):
    enclave, engine = recorded(attested=True)
    session = descriptor(enclave)
    secret = new_conversation()
    attested_turn(enclave, session, secret)
    attested_turn(enclave, session, secret)
    attested_turn(enclave, session, new_conversation())
    attested_turn(enclave, session, None)  # an older client: nothing kept
    mine, again, other, none = engine.keys
    assert mine is not None and mine == again and other != mine and none is None
    assert secret not in mine
    kms_turn(enclave, Conversation(enclave.kms))
    assert engine.keys[-1] not in (mine, other)  # the kms protocol's keys are its own


def test_the_same_secret_under_another_session_gets_another_key(recorded):
    enclave, engine = recorded(attested=True)
    secret = new_conversation()
    attested_turn(enclave, descriptor(enclave, "x25519"), secret)
    attested_turn(enclave, descriptor(enclave, "mlkem768-x25519"), secret)
    assert engine.keys[0] != engine.keys[1]


def test_rotating_the_session_key_evicts_its_conversations(recorded):
    enclave, engine = recorded(attested=True)
    old = descriptor(enclave)
    attested_turn(enclave, old, new_conversation())
    assert enclave.attested is not None
    enclave.attested.rotate("x25519")
    assert engine.evicted == [engine.keys[0]]
    assert attested_turn(enclave, old, new_conversation())[-1]["code"] == "attested_descriptor_unknown"
    assert len(engine.keys) == 1  # the refused request never reached the engine


def test_pong_counts_the_cache_and_shows_no_key(recorded):
    enclave, engine = recorded()
    kms_turn(enclave, Conversation(enclave.kms))
    stats = enclave.stats()
    assert (stats["kv_cache_hits"], stats["kv_cache_misses"], stats["prefilled_tokens"]) == (7, 2, 5)
    assert stats["threads"] >= 1
    assert not any(isinstance(v, bytes) for v in stats.values())
    assert engine.keys[0] is not None and engine.keys[0].hex() not in repr(stats)


# --- one_shot: no turn follows, so nothing is kept ------------------------------------------------


def test_a_one_shot_kms_request_is_answered_and_keeps_neither_key_nor_cells(recorded):
    enclave, engine = recorded()
    kms_turn(enclave, Conversation(enclave.kms), one_shot=True)
    assert engine.keys == [None]
    assert len(enclave.server._data_keys) == 0
    assert enclave.key_release.decrypt_calls == 1
    kms_turn(enclave, Conversation(enclave.kms))  # a chat's turn, beside it: kept as before
    assert engine.keys[1] is not None and len(enclave.server._data_keys) == 1


def test_one_shot_turns_of_one_conversation_each_ask_kms_again(recorded):
    enclave, engine = recorded()
    conversation = Conversation(enclave.kms)
    kms_turn(enclave, conversation, one_shot=True)
    kms_turn(enclave, conversation, one_shot=True)
    assert engine.keys == [None, None]
    assert enclave.key_release.decrypt_calls == 2  # no cached key to reuse: none was kept
    assert enclave.stats()["data_key_cache_hits"] == 0


def test_a_one_shot_turn_of_a_kept_conversation_keeps_nothing_more_and_takes_nothing_away(recorded):
    enclave, engine = recorded()
    conversation = Conversation(enclave.kms)
    kms_turn(enclave, conversation)
    kms_turn(enclave, conversation, one_shot=True)  # the cached key serves it; no cache key for it
    kms_turn(enclave, conversation)
    kept, one_shot, again = engine.keys
    assert kept is not None and one_shot is None and again == kept
    assert enclave.key_release.decrypt_calls == 1 and len(enclave.server._data_keys) == 1
    assert engine.evicted == []


def test_a_one_shot_attested_request_gets_no_key_even_with_a_secret(recorded):
    enclave, engine = recorded(attested=True)
    session = descriptor(enclave)
    secret = new_conversation()
    attested_turn(enclave, session, secret, one_shot=True)
    attested_turn(enclave, session, secret)
    one_shot, kept = engine.keys
    assert one_shot is None and kept is not None
    assert enclave.attested is not None and enclave.attested.conversations() == 1  # only the kept turn's
