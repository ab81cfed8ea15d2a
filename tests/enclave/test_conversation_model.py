"""The conversation cache through the real enclave server and the real model (kms and attested):
turn two prefills only what the conversation added, another conversation with the same words gets
no hit, cached answers equal uncached ones word for word, and a dropped data key wipes the cells."""

from __future__ import annotations

import pytest

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.inference.model import default_model_path
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.attested import new_conversation, seal_request
from nitro_llm.protocol.kms_envelope import ResponseOpener

from .conftest import Conversation, start_enclave
from .test_conversation_wiring import descriptor

pytestmark = [pytest.mark.slow, pytest.mark.model]
pytest.importorskip("llama_cpp")

from nitro_llm.inference.batching import BatchScheduler  # noqa: E402
from nitro_llm.inference.llama_batch import LlamaBatchDecoder  # noqa: E402

CTX = 1024
TURNS = ["What is the capital of France?", "And what river runs through it?", "Name a museum there."]


def model_enclave(path, config: EnclaveConfig | None = None):
    decoder = LlamaBatchDecoder(default_model_path(), n_seq=2, n_ctx_seq=CTX, n_threads=1)
    engine = BatchScheduler(decoder, name="smollm2", ctx=CTX, max_waiting=4)
    enclave = start_enclave(path, engine=engine, config=config, attested=True)
    enclave.give_credentials()
    return enclave, engine


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    enclave, engine = model_enclave(tmp_path_factory.mktemp("model-enclave"))
    yield enclave, engine
    enclave.server.stop()


def kms_ask(enclave, conversation: Conversation, messages: list[dict]) -> tuple[str, int]:
    """One turn; the answer and its prompt's token count (from the sealed final chunk's usage)."""
    header, envelope = conversation.seal(messages, max_tokens=16)
    replies = enclave.call(frame_kinds.infer_frame(envelope.to_cbor()), timeout=120)
    if replies[-1]["t"] == "error":
        raise frame_kinds.read_error(replies[-1])
    opener = ResponseOpener(conversation.data_key, header)
    payloads = [opener.open(f) for f in replies]
    opener.finish()
    return "".join(p["text"] for p in payloads), payloads[-1]["usage"]["prompt_tokens"]


def attested_ask(enclave, secret: bytes | None, messages: list[dict]) -> str:
    sealed = seal_request(
        descriptor(enclave), {"messages": messages, "max_tokens": 16, "temperature": 0.0}, conversation=secret
    )
    replies = enclave.call(frame_kinds.infer_frame(sealed.envelope.to_cbor()), timeout=120)
    opener = sealed.response_opener()
    return "".join(opener.open(f)["text"] for f in replies)


def settled_stats(enclave, engine) -> dict:
    assert engine.wait_idle(120)  # the finished turn's copy is kept once the engine is idle
    return enclave.stats()


def delta(after: dict, before: dict, *names: str) -> tuple[int, ...]:
    return tuple(after[n] - before[n] for n in names)


def test_turn_two_prefills_only_what_the_conversation_added(served):
    enclave, engine = served
    conversation = Conversation(enclave.kms)
    messages = [{"role": "user", "content": TURNS[0]}]
    before = settled_stats(enclave, engine)
    first, prompt1 = kms_ask(enclave, conversation, messages)
    after1 = settled_stats(enclave, engine)
    assert delta(after1, before, "kv_cache_hits", "kv_cache_misses", "prefilled_tokens") == (0, 1, prompt1)
    messages += [{"role": "assistant", "content": first}, {"role": "user", "content": TURNS[1]}]
    _, prompt2 = kms_ask(enclave, conversation, messages)
    after2 = settled_stats(enclave, engine)
    hits, reused, prefilled = delta(
        after2, after1, "kv_cache_hits", "kv_cache_reused_tokens", "prefilled_tokens"
    )
    assert hits == 1 and reused > prompt1  # the whole first turn, question and answer
    assert prefilled == prompt2 - reused < prompt2 - prompt1


def test_another_conversation_with_the_same_words_gets_no_hit(served):
    enclave, engine = served
    messages = [{"role": "user", "content": TURNS[0]}]
    kms_ask(enclave, Conversation(enclave.kms), messages)
    attested_ask(enclave, new_conversation(), messages)
    before = settled_stats(enclave, engine)
    _, prompt = kms_ask(enclave, Conversation(enclave.kms), messages)  # same words, other client
    attested_ask(enclave, new_conversation(), messages)
    after = settled_stats(enclave, engine)
    assert delta(after, before, "kv_cache_hits", "kv_cache_reused_tokens", "kv_cache_misses") == (0, 0, 2)
    assert after["prefilled_tokens"] - before["prefilled_tokens"] == 2 * prompt


@pytest.mark.parametrize("protocol", ["kms", "attested"])
def test_cached_answers_equal_uncached_ones(served, protocol):
    enclave, engine = served
    kept = Conversation(enclave.kms)
    secret = new_conversation()

    def ask(messages, cached: bool) -> str:
        if protocol == "kms":  # uncached: a new conversation (data key) for every turn
            return kms_ask(enclave, kept if cached else Conversation(enclave.kms), messages)[0]
        return attested_ask(enclave, secret if cached else None, messages)

    answers: dict[bool, list[str]] = {}
    before = settled_stats(enclave, engine)
    for cached in (False, True):
        messages: list[dict] = []
        answers[cached] = []
        for text in TURNS:  # back to back, as a script sends them
            messages.append({"role": "user", "content": text})
            answers[cached].append(ask(list(messages), cached))
            messages.append({"role": "assistant", "content": answers[cached][-1]})
    assert answers[True] == answers[False]
    after = settled_stats(enclave, engine)
    assert delta(after, before, "kv_cache_hits") == (len(TURNS) - 1,)


def test_a_dropped_data_key_wipes_its_conversation_cells(tmp_path):
    enclave, engine = model_enclave(tmp_path, EnclaveConfig(engine="llama", data_key_cache_size=1))
    try:
        messages = [{"role": "user", "content": TURNS[0]}]
        kms_ask(enclave, Conversation(enclave.kms), messages)
        assert settled_stats(enclave, engine)["kv_cache_conversations"] == 1
        (entry,) = engine._cache._entries.values()
        state = entry.state
        kms_ask(enclave, Conversation(enclave.kms), messages)  # pushes the first data key out
        stats = settled_stats(enclave, engine)
        assert state.is_wiped() and stats["kv_cache_conversations"] == 1
        assert stats["kv_cache_evictions"] == 1
    finally:
        enclave.server.stop()
