import threading

from nitro_llm.protocol.messages import Message
from nitro_llm_dev.engines.echo import EchoEngine

CHAT = [
    Message("system", "s"),
    Message("user", "first"),
    Message("assistant", "a"),
    Message("user", "one two  three"),
]


def _run(engine, **kw):
    params = {"max_tokens": 100, "temperature": 0.0, "seed": None} | kw
    return list(engine.generate(CHAT, **params))


def test_answers_last_user_message_piece_by_piece():
    chunks = _run(EchoEngine())
    assert [c.text for c in chunks] == ["one ", "two  ", "three", ""]
    assert [c.final for c in chunks] == [False, False, False, True]
    assert chunks[-1].finish_reason == "stop"
    assert chunks[-1].usage.to_dict() == {"completion_tokens": 3, "prompt_tokens": 6}


def test_max_tokens_bounds_and_reports_length():
    chunks = _run(EchoEngine(), max_tokens=2)
    assert "".join(c.text for c in chunks) == "one two  "
    assert chunks[-1].finish_reason == "length"


def test_cancel_stops_early():
    cancel = threading.Event()
    gen = EchoEngine().generate(CHAT, max_tokens=100, temperature=0.0, seed=None, cancel=cancel)
    assert next(gen).text == "one "
    cancel.set()
    rest = list(gen)
    assert len(rest) == 1 and rest[0].finish_reason == "cancelled" and rest[0].usage.completion_tokens == 1


def test_text_not_in_repr():
    chunks = _run(EchoEngine())
    assert "three" not in repr(chunks)
