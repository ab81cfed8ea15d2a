"""The batching scheduler turns token bytes into text: a character whose bytes are cut by max_tokens
is dropped, never shown as U+FFFD. A scripted decoder stands in for llama.cpp, so the bytes of each
token are exact (the real model splits emoji and CJK characters over several tokens the same way)."""

import pytest

from nitro_llm.inference.batching import BatchScheduler
from nitro_llm.protocol.messages import Message

END = 0


class ScriptedDecoder:
    """Answers every prompt with the same tokens, whose pieces are the given byte strings."""

    n_seq = 1
    n_ctx_seq = 256
    n_batch = 64

    def __init__(self, pieces: list[bytes]) -> None:
        self._pieces = {i + 1: piece for i, piece in enumerate(pieces)}
        self._next: dict[int, int] = {}

    def prompt_tokens(self, messages):
        return [100, 101, 102]

    def open_slot(self, slot, sampling):
        self._next[slot] = 1

    def close_slot(self, slot):
        self._next.pop(slot, None)

    def step(self, feeds):
        out = {}
        for feed in feeds:
            if feed.sample:
                token = self._next[feed.slot]
                out[feed.slot] = token if token in self._pieces else END
                self._next[feed.slot] = token + 1
        return out

    def is_end(self, token):
        return token == END

    def piece(self, token):
        return self._pieces[token]

    def close(self):
        pass


def answer(pieces, max_tokens):
    scheduler = BatchScheduler(ScriptedDecoder(pieces), name="scripted", ctx=256, max_waiting=1)
    try:
        chunks = list(
            scheduler.generate([Message("user", "hi")], max_tokens=max_tokens, temperature=0.0, seed=1)
        )
    finally:
        scheduler.close()
    return "".join(c.text for c in chunks), chunks[-1].finish_reason


# "é" is C3 A9 and "😀" is F0 9F 98 80: each split over tokens, as a byte-level tokenizer does.
PIECES = [b"caf", b"\xc3", b"\xa9 ", b"\xf0\x9f", b"\x98\x80", b"!"]


def test_a_character_cut_by_max_tokens_is_dropped_not_replaced():
    assert answer(PIECES, 2) == ("caf", "length")  # the answer stops after the first byte of "é"
    assert answer(PIECES, 4) == ("café ", "length")  # ... after half of the emoji
    assert answer(PIECES, 5) == ("café 😀", "length")


def test_whole_answers_are_unchanged():
    assert answer(PIECES, 50) == ("café 😀!", "stop")


@pytest.mark.model
def test_the_real_model_never_shows_a_cut_emoji_as_a_replacement_character():
    """SmolLM2 spells an emoji over three tokens: max_tokens of 1 or 2 cuts it (U+FFFD before)."""
    pytest.importorskip("llama_cpp")
    from nitro_llm.inference.llama_batch import LlamaBatchDecoder
    from nitro_llm.inference.model import default_model_path

    decoder = LlamaBatchDecoder(default_model_path(), n_seq=1, n_ctx_seq=256, n_threads=1)
    scheduler = BatchScheduler(decoder, name="smollm2", ctx=256, max_waiting=1)
    question = [Message("user", "Reply with only these emoji: 😀🎉🚀🔥")]
    try:
        answers = [
            "".join(c.text for c in scheduler.generate(question, max_tokens=n, temperature=0.0, seed=1))
            for n in range(1, 7)
        ]
    finally:
        scheduler.close()
    assert not any("\ufffd" in answer for answer in answers), answers
    assert all(answers[-1].startswith(answer) for answer in answers)  # each is a whole-character prefix
    assert answers[-1]  # and the longest holds characters at all
