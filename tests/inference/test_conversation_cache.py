"""The per-conversation KV cache on the real model: a turn prefills only what its conversation added,
never reuses another key's cells, forgets by LRU and by evict(key), wipes what it forgets, and
answers (greedy) exactly as it does without the cache. Short prompts, short answers, one thread."""

import threading

import pytest

from nitro_llm.inference.model import default_model_path
from nitro_llm.protocol.messages import Message

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp")

from nitro_llm.inference.batching import BatchScheduler  # noqa: E402
from nitro_llm.inference.llama_batch import LlamaBatchDecoder  # noqa: E402

CTX = 1024
TURNS = ["What is the capital of France?", "And what river runs through it?", "Name a museum there."]


def make(n_seq=2, **cache):
    decoder = LlamaBatchDecoder(default_model_path(), n_seq=n_seq, n_ctx_seq=CTX, n_threads=1)
    return BatchScheduler(decoder, name="smollm2", ctx=CTX, max_waiting=4, **cache)


@pytest.fixture(scope="module")
def engine():
    s = make()
    yield s
    s.close()


def answer(s, messages, key, max_tokens=24):
    chunks = list(s.generate(messages, max_tokens=max_tokens, temperature=0.0, seed=None, cache_key=key))
    assert chunks[-1].final
    return "".join(c.text for c in chunks), chunks[-1].usage.prompt_tokens


def converse(s, key, turns=TURNS, *, settle=True, max_tokens=24):
    """The answers of a conversation, each turn sent with the history so far; ``settle``: let the
    engine finish keeping each turn's copy before the next turn (else the next turn races it)."""
    messages, answers = [], []
    for text in turns:
        messages.append(Message("user", text))
        reply, _ = answer(s, list(messages), key, max_tokens)
        answers.append(reply)
        messages.append(Message("assistant", reply))
        if settle:
            assert s.wait_idle(60)
    return answers


def stats(s):
    assert s.wait_idle(60)
    return s.cache_stats()


def delta(after, before):
    return {k: after[k] - before[k] for k in after}


def slots_empty(s):
    return all(s._decoder.seq_pos_max(slot) == -1 for slot in range(s._decoder.n_seq))


def test_a_turn_prefills_only_what_the_conversation_added(engine):
    key = b"conversation-1" + bytes(18)
    messages = [Message("user", TURNS[0])]
    before = stats(engine)
    first, prompt1 = answer(engine, messages, key)
    after1 = stats(engine)
    assert delta(after1, before)["misses"] == 1 and delta(after1, before)["prefill_tokens"] == prompt1
    assert slots_empty(engine)  # the cells live on only as the copy, not in a slot
    messages += [Message("assistant", first), Message("user", TURNS[1])]
    _, prompt2 = answer(engine, messages, key)
    d = delta(stats(engine), after1)
    assert d["hits"] == 1 and d["misses"] == 0
    # the whole first turn (question and answer) was reused: only the new question was prefilled
    assert d["reused_tokens"] > prompt1
    assert d["prefill_tokens"] == prompt2 - d["reused_tokens"] < prompt2 - prompt1
    engine.evict(key)


def test_no_reuse_across_conversations_even_with_the_same_prefix(engine):
    messages = [Message("user", TURNS[0])]
    answer(engine, messages, b"tenant-a")
    before = stats(engine)
    _, prompt = answer(engine, messages, b"tenant-b")  # the very same prompt, another key
    _, same = answer(engine, messages, None)  # and without a key
    d = delta(stats(engine), before)
    assert d["hits"] == 0 and d["reused_tokens"] == 0 and d["misses"] == 1
    assert d["prefill_tokens"] == prompt + same
    assert b"tenant-a" in engine._cache and b"tenant-b" in engine._cache
    engine.evict(b"tenant-a")
    engine.evict(b"tenant-b")


def test_evict_wipes_the_copy_and_the_next_turn_starts_over(engine):
    key = b"evict-me"
    messages = [Message("user", TURNS[0])]
    first, _ = answer(engine, messages, key)
    stats(engine)
    entry = engine._cache._entries[key]
    state, tokens = entry.state, entry.tokens
    assert state.nbytes > 0 and tokens
    assert engine.evict(key)
    assert state.is_wiped() and tokens == [] and key not in engine._cache
    assert slots_empty(engine)
    before = stats(engine)
    answer(engine, [*messages, Message("assistant", first), Message("user", TURNS[1])], key)
    d = delta(stats(engine), before)
    assert d["hits"] == 0 and d["misses"] == 1
    engine.evict(key)


def test_evict_while_running_leaves_nothing_behind(engine):
    key = b"evicted-mid-answer"
    stream = engine.generate(
        [Message("user", "Write a long story about a dragon.")],
        max_tokens=40,
        temperature=0.0,
        seed=None,
        cache_key=key,
    )
    assert not next(stream).final  # running
    engine.evict(key)
    assert list(stream)[-1].final
    stats(engine)
    assert key not in engine._cache and slots_empty(engine)


def test_least_recently_used_conversation_is_evicted_and_wiped():
    s = make(cache_conversations=2)
    try:
        messages = [Message("user", TURNS[0])]
        answer(s, messages, b"a", max_tokens=4)
        stats(s)
        state_a = s._cache._entries[b"a"].state
        answer(s, messages, b"b", max_tokens=4)
        answer(s, messages, b"c", max_tokens=4)
        stats(s)
        assert b"a" not in s._cache and b"b" in s._cache and b"c" in s._cache
        assert state_a.is_wiped()
        assert s.cache_stats()["conversations"] == 2 and s.cache_stats()["evictions"] == 1
    finally:
        s.close()
    assert len(s._cache) == 0  # close wipes the rest


def test_bytes_bound_keeps_nothing_too_large():
    s = make(cache_bytes=1024)  # far less than one turn's cells
    try:
        converse(s, b"k", TURNS[:2], max_tokens=8)
        st = stats(s)
        assert st["hits"] == 0 and st["conversations"] == 0 and st["bytes"] == 0
    finally:
        s.close()


@pytest.mark.parametrize("settle", [True, False], ids=["settled", "back-to-back"])
def test_cached_turns_answer_exactly_as_uncached_ones(engine, settle):
    before = stats(engine)
    uncached = converse(engine, None)
    key = b"same-text-" + (b"s" if settle else b"b")
    cached = converse(engine, key, settle=settle)
    assert cached == uncached
    d = delta(stats(engine), before)
    assert d["hits"] == len(TURNS) - 1
    engine.evict(key)


def test_two_conversations_at_once_answer_as_they_do_alone(engine):
    other = ["Tell me about Paris.", "Who lives there?", "Is it big?"]
    alone = {"one": converse(engine, None), "two": converse(engine, None, other)}
    together = {}

    def run(name, turns):
        together[name] = converse(engine, name.encode(), turns, settle=False)

    threads = [threading.Thread(target=run, args=args) for args in (("one", TURNS), ("two", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(300)
    assert together == alone
    stats(engine)
    engine.evict(b"one")
    engine.evict(b"two")
    assert len(engine._cache) == 0 and slots_empty(engine)


# -- the public prefix: the model's own template, prefilled once, shared safely ------------------------


@pytest.fixture(scope="module")
def public_engine():
    decoder = LlamaBatchDecoder(default_model_path(), n_seq=2, n_ctx_seq=CTX, n_threads=1)
    s = BatchScheduler(
        decoder,
        name="smollm2",
        ctx=CTX,
        max_waiting=4,
        public_prefix=decoder.public_prefix(),
        turn_separator=decoder.turn_separator(),
    )
    yield s
    s.close()


def test_the_public_prefix_is_the_template_alone(public_engine):
    decoder = public_engine._decoder
    prefix = decoder.public_prefix()
    text = b"".join(decoder.piece(t) for t in prefix).decode()
    assert "SmolLM" in text and text.endswith("user\n")  # the template's system prompt, up to the user's turn
    for question in (*TURNS, "Z"):  # every one-question chat starts with it, whatever it asks
        assert decoder.prompt_tokens([Message("user", question)])[: len(prefix)] == prefix
    assert stats(public_engine)["public_prefix_tokens"] == len(prefix)


def test_public_reuse_depends_on_the_prompt_alone_never_on_who_came_before(public_engine):
    """The side channel a shared prefix cache opens, closed: the same request reuses exactly as much
    on a fresh engine, after another user's request, and after that user's own chat was kept."""
    prefix = len(public_engine._decoder.public_prefix())
    question = [Message("user", "What is the capital of Spain?")]
    before = stats(public_engine)
    answer(public_engine, question, None)
    alone = delta(stats(public_engine), before)
    public = public_engine._public
    snapshot = bytes(public._buffer)
    for other, key in (
        ("What is the capital of Spain? And Italy?", None),
        ("What is the capital of Spain?", b"k"),
    ):
        answer(
            public_engine, [Message("user", other)], key
        )  # shares far more with the request than the template
        mark = stats(public_engine)
        answer(public_engine, question, None)
        after = delta(stats(public_engine), mark)
        for counter in ("public_hits", "public_reused_tokens", "prefill_tokens", "hits", "reused_tokens"):
            assert after[counter] == alone[counter], counter
        assert after["public_reused_tokens"] == prefix and after["reused_tokens"] == 0
    assert bytes(public._buffer) == snapshot  # restored from, never written to
    public_engine.evict(b"k")


def test_a_system_prompt_of_its_own_reuses_only_the_template_tokens_it_shares(public_engine):
    decoder = public_engine._decoder
    messages = [Message("system", "You are a terse clinical assistant."), Message("user", TURNS[0])]
    shared = 0
    prefix, prompt = decoder.public_prefix(), decoder.prompt_tokens(messages)
    while prefix[shared] == prompt[shared]:
        shared += 1
    before = stats(public_engine)
    answer(public_engine, messages, None)
    d = delta(stats(public_engine), before)
    assert 0 < d["public_reused_tokens"] == shared < len(prefix)


@pytest.mark.parametrize("key", [None, b"public-and-kept"], ids=["one-shot", "conversation"])
def test_answers_with_the_public_prefix_are_exactly_those_without(engine, public_engine, key):
    """Greedy text is unchanged by restoring the public cells instead of prefilling them, in a one-shot
    question and in a kept conversation (whose first turn starts from the public cells and whose later
    turns from cells settled with the turn separator)."""
    before = stats(public_engine)
    assert converse(public_engine, key) == converse(engine, None)
    d = delta(stats(public_engine), before)
    assert d["public_hits"] == (1 if key else len(TURNS))  # later turns restore their own copy instead
    if key:
        assert d["hits"] == len(TURNS) - 1
        public_engine.evict(key)


def test_the_turn_separator_is_settled_with_the_answer(engine, public_engine):
    """A kept turn's cells end with what the template writes before the next user's words, so the next
    turn prefills that many tokens fewer, and answers the same. An answer max_tokens cut keeps its last
    token too (sampled and sent, never fed): the kept tokens are the whole prompt and answer."""
    separator = public_engine._decoder.turn_separator()
    text = b"".join(public_engine._decoder.piece(t) for t in separator).decode()
    assert text.endswith("user\n") and 3 <= len(separator) <= 8
    for max_tokens in (24, 3):  # a whole short answer, then one cut by max_tokens
        prefilled, answers = {}, {}
        for name, s, tail in (("plain", engine, 0), ("separator", public_engine, len(separator))):
            key = f"separator-{name}-{max_tokens}".encode()
            chunks = list(
                s.generate(
                    [Message("user", TURNS[0])],
                    max_tokens=max_tokens,
                    temperature=0.0,
                    seed=None,
                    cache_key=key,
                )
            )
            first, usage = "".join(c.text for c in chunks), chunks[-1].usage
            before = stats(s)
            assert len(s._cache._entries[key].tokens) == usage.prompt_tokens + usage.completion_tokens + tail
            second = [Message("user", TURNS[0]), Message("assistant", first), Message("user", TURNS[1])]
            answers[name] = (first, answer(s, second, key, max_tokens)[0])
            d = delta(stats(s), before)
            assert d["hits"] == 1
            prefilled[name] = d["prefill_tokens"]
            s.evict(key)
        assert answers["plain"] == answers["separator"]
        assert prefilled["plain"] - prefilled["separator"] == len(separator)
