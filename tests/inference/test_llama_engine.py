"""The real model, small budgets: n_threads=1 and a few tokens per test."""

import threading

import pytest

from nitro_llm.inference.errors import ContextOverflowError
from nitro_llm.inference.model import default_model_path
from nitro_llm.protocol.messages import Message

pytestmark = pytest.mark.model
llama_cpp = pytest.importorskip("llama_cpp")

from nitro_llm.inference.llama_engine import LlamaEngine  # noqa: E402


@pytest.fixture(scope="module")
def engine():
    return LlamaEngine(default_model_path(), name="smollm2", n_threads=1, n_ctx=512)


QUESTION = [Message("user", "What is 2+2?")]


def _text(chunks):
    return "".join(c.text for c in chunks)


def test_streams_tokens_with_final_usage(engine):
    chunks = list(engine.generate(QUESTION, max_tokens=8, temperature=0.0, seed=None))
    assert len(chunks) >= 3  # streamed, not one blob
    assert all(not c.final for c in chunks[:-1]) and chunks[-1].final
    assert chunks[-1].finish_reason in ("stop", "length")
    assert 1 <= chunks[-1].usage.completion_tokens <= 8
    assert _text(chunks).strip()


def test_greedy_is_deterministic_and_max_tokens_respected(engine):
    a = list(engine.generate(QUESTION, max_tokens=6, temperature=0.0, seed=None))
    b = list(engine.generate(QUESTION, max_tokens=6, temperature=0.0, seed=123))
    assert _text(a) == _text(b)
    assert a[-1].usage.completion_tokens <= 6


def test_seed_reproduces_sampled_answer(engine):
    prompt = [Message("user", "Tell me a short story about a cat.")]
    a = _text(engine.generate(prompt, max_tokens=12, temperature=1.5, seed=42))
    b = _text(engine.generate(prompt, max_tokens=12, temperature=1.5, seed=42))
    assert a == b


def test_cancel(engine):
    cancel = threading.Event()
    gen = engine.generate(
        [Message("user", "Count from 1 to 100.")], max_tokens=64, temperature=0.0, seed=None, cancel=cancel
    )
    next(gen)
    cancel.set()
    rest = list(gen)
    assert rest[-1].finish_reason == "cancelled"
    assert rest[-1].usage.completion_tokens <= 2


def test_context_overflow_is_typed(engine):
    too_long = [Message("user", "word " * 2000)]
    with pytest.raises(ContextOverflowError):
        list(engine.generate(too_long, max_tokens=4, temperature=0.0, seed=None))
    # and the engine still answers afterwards
    assert _text(engine.generate(QUESTION, max_tokens=3, temperature=0.0, seed=None))
