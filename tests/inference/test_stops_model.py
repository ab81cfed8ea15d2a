"""Stop sequences on the real model, through the engine the enclave runs (continuous batching) and the
stop filter the enclave applies to it: greedy decoding makes the answer exact, so a stop string made
of the end of one token piece and the start of the next cuts the answer exactly there."""

import pytest

from nitro_llm.inference.model import default_model_path
from nitro_llm.inference.stops import stop_at
from nitro_llm.protocol.messages import Message

pytestmark = pytest.mark.model
pytest.importorskip("llama_cpp")

from nitro_llm.inference.batching import BatchScheduler  # noqa: E402
from nitro_llm.inference.llama_batch import LlamaBatchDecoder  # noqa: E402

QUESTION = [Message("user", "Count from 1 to 20, separated by commas.")]


@pytest.fixture(scope="module")
def engine():
    decoder = LlamaBatchDecoder(default_model_path(), n_seq=1, n_ctx_seq=512, n_threads=1)
    scheduler = BatchScheduler(decoder, name="smollm2", ctx=512, max_waiting=2)
    yield scheduler
    scheduler.close()


def _answer(engine, stops=()):
    chunks = list(stop_at(engine.generate(QUESTION, max_tokens=48, temperature=0.0, seed=None), stops))
    return [c.text for c in chunks], chunks[-1]


def test_a_stop_string_across_two_token_pieces_cuts_the_real_models_answer(engine):
    pieces, last = _answer(engine)
    full = "".join(pieces)
    assert last.finish_reason in ("stop", "length") and len(pieces) > 8
    # A boundary a third of the way in between two pieces whose joining characters appear nowhere earlier.
    for i in range(len(pieces) // 3, len(pieces) - 2):
        before, after = "".join(pieces[:i]), pieces[i]
        if before and after and before[-1].strip() and after[0].strip():
            stop = before[-1] + after[0]
            if full.find(stop) == len(before) - 1:
                break
    else:
        pytest.fail(f"no usable piece boundary in {pieces!r}")

    cut, final = _answer(engine, [stop, "never-in-this-answer"])
    assert "".join(cut) == full[: len(before) - 1] and len(cut) > 3
    assert final.finish_reason == "stop" and final.usage is not None
    # The engine stopped there and is free: the next answer is whole again, and the same as before.
    again, _ = _answer(engine)
    assert "".join(again) == full
