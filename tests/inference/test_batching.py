"""Continuous batching on the real model: batched answers equal solo answers, the queue is bounded,
cancellation frees the slot. Small budgets: one thread, short contexts, a few dozen tokens."""

import threading
import time

import pytest

from nitro_llm.inference.errors import ContextOverflowError, EngineBusyError
from nitro_llm.inference.model import default_model_path
from nitro_llm.protocol.messages import Message

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp")

from nitro_llm.inference.batching import BatchScheduler  # noqa: E402
from nitro_llm.inference.llama_batch import LlamaBatchDecoder  # noqa: E402
from nitro_llm.inference.llama_engine import LlamaEngine  # noqa: E402

PROMPTS = [
    "What color is the sky on a clear day?",
    "Write a long story about a dragon who learns to cook.",
    "Explain photosynthesis briefly.",
    "Tell me about Paris.",
    "Who wrote Hamlet?",
    "Give me a haiku about rain.",
]


def make(n_seq, *, max_waiting=8, ctx=512):
    decoder = LlamaBatchDecoder(default_model_path(), n_seq=n_seq, n_ctx_seq=ctx, n_threads=1)
    return BatchScheduler(decoder, name="smollm2", ctx=ctx, max_waiting=max_waiting)


@pytest.fixture(scope="module")
def six():
    s = make(len(PROMPTS))
    yield s
    s.close()


def ask(s, prompt, **kw):
    kw.setdefault("max_tokens", 24)
    kw.setdefault("temperature", 0.0)
    kw.setdefault("seed", None)
    return list(s.generate([Message("user", prompt)], **kw))


def text(chunks):
    return "".join(c.text for c in chunks)


def together(s, prompts, **kw):
    out = {}
    threads = [threading.Thread(target=lambda p=p: out.setdefault(p, ask(s, p, **kw))) for p in prompts]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    return out


def test_greedy_batched_equals_each_prompt_alone(six):
    alone = {p: text(ask(six, p)) for p in PROMPTS}
    steps_before, tokens_before = six.steps, six.step_tokens
    batched = together(six, PROMPTS)
    assert {p: text(c) for p, c in batched.items()} == alone
    steps, tokens = six.steps - steps_before, six.step_tokens - tokens_before
    # one answer token per sequence per step: 6 x 24 answer tokens took far fewer than 144 steps
    assert steps < 0.5 * 6 * 24, (steps, tokens)
    for chunks in batched.values():
        assert chunks[-1].final and 1 <= chunks[-1].usage.completion_tokens <= 24
        assert chunks[-1].usage.prompt_tokens > 5


def test_same_answer_as_the_single_stream_engine(six):
    engine = LlamaEngine(default_model_path(), name="smollm2", n_threads=1, n_ctx=512)
    for prompt in PROMPTS[:2]:
        reference = text(engine.generate([Message("user", prompt)], max_tokens=24, temperature=0.0, seed=1))
        assert text(ask(six, prompt)) == reference


def test_seeded_sampling_is_per_sequence(six):
    kw = {"temperature": 0.9, "seed": 1234, "max_tokens": 16}
    alone = text(ask(six, PROMPTS[1], **kw))
    assert text(ask(six, PROMPTS[1], **kw)) == alone
    others = {"temperature": 1.2, "seed": 99, "max_tokens": 16}
    results = {}
    threads = [
        threading.Thread(target=lambda: results.setdefault("mine", ask(six, PROMPTS[1], **kw))),
        *[threading.Thread(target=lambda p=p: ask(six, p, **others)) for p in PROMPTS[2:5]],
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert text(results["mine"]) == alone  # other sequences' sampling does not leak into this one
    assert text(ask(six, PROMPTS[1], temperature=0.9, seed=4321, max_tokens=16)) != alone


def test_max_tokens_and_context_limits(six):
    chunks = ask(six, PROMPTS[1], max_tokens=5)
    assert chunks[-1].finish_reason == "length" and chunks[-1].usage.completion_tokens == 5
    with pytest.raises(ContextOverflowError):
        six.generate([Message("user", "word " * 800)], max_tokens=4, temperature=0.0, seed=None)
    # the context caps the answer: a prompt near the limit still gets an answer, cut at the context
    near = ask(six, "word " * 470, max_tokens=200)
    assert near[-1].final and near[-1].usage.prompt_tokens + near[-1].usage.completion_tokens <= 512


def test_queue_is_bounded_and_slots_free_on_close():
    s = make(1, max_waiting=1)
    try:
        running = s.generate([Message("user", PROMPTS[1])], max_tokens=400, temperature=0.0, seed=None)
        assert not next(running).final  # it holds the only slot
        waiting = s.generate([Message("user", PROMPTS[0])], max_tokens=4, temperature=0.0, seed=None)
        assert s.queued == 2
        with pytest.raises(EngineBusyError) as err:
            s.generate([Message("user", "no room")], max_tokens=4, temperature=0.0, seed=None)
        assert err.value.code == "enclave_busy" and err.value.retryable
        running.close()  # the consumer left: the slot goes to the waiting request at the next step
        started = time.monotonic()
        answer = list(waiting)
        assert answer[-1].final and answer[-1].finish_reason in ("stop", "length")
        assert time.monotonic() - started < 10
        deadline = time.monotonic() + 5
        while s.queued and time.monotonic() < deadline:
            time.sleep(0.01)
        assert s.queued == 0
    finally:
        s.close()


def test_cancel_event_stops_a_running_and_a_waiting_request():
    s = make(1, max_waiting=2)
    try:
        stop_running, stop_waiting = threading.Event(), threading.Event()
        running = s.generate(
            [Message("user", PROMPTS[1])], max_tokens=400, temperature=0.0, seed=None, cancel=stop_running
        )
        next(running)
        waiting = s.generate(
            [Message("user", PROMPTS[0])], max_tokens=400, temperature=0.0, seed=None, cancel=stop_waiting
        )
        stop_waiting.set()
        tail = list(waiting)
        assert tail[-1].finish_reason == "cancelled" and tail[-1].usage.completion_tokens == 0
        stop_running.set()
        rest = list(running)
        assert rest[-1].finish_reason == "cancelled"
        assert rest[-1].usage.completion_tokens < 400
        assert text(ask(s, PROMPTS[4], max_tokens=4))  # the slot is free again
    finally:
        s.close()


def test_close_cancels_everything():
    s = make(1, max_waiting=1)
    running = s.generate([Message("user", PROMPTS[1])], max_tokens=400, temperature=0.0, seed=None)
    next(running)
    waiting = s.generate([Message("user", PROMPTS[0])], max_tokens=4, temperature=0.0, seed=None)
    s.close()
    assert list(running)[-1].finish_reason == "cancelled"
    assert list(waiting)[-1].finish_reason == "cancelled"
    with pytest.raises(EngineBusyError):
        s.generate([Message("user", "late")], max_tokens=4, temperature=0.0, seed=None)
