"""`nitro-llm ask` asks one question and never a second: it seals it ``one_shot`` so the enclave keeps
nothing for it; `nitro-llm chat`, whose turns follow each other, never does. The protocol is replaced
by a recording conversation (what one_shot does on the wire and in the enclave: tests/proxy,
tests/enclave)."""

from __future__ import annotations

import io

import pytest

from nitro_llm.cli import client as cli
from nitro_llm.client.wire import AnswerChunk


class RecordingConversation:
    def __init__(self) -> None:
        self.options: list[dict] = []
        self.closed = False

    def stream(self, messages, **options):
        self.options.append(options)
        yield AnswerChunk("ok", final=True, finish_reason="stop")

    def close(self) -> None:
        self.closed = True


def test_ask_seals_its_question_one_shot(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    conversation = RecordingConversation()
    monkeypatch.setattr(cli, "_choose_protocol", lambda protocol, policy, hybrid: "kms")
    monkeypatch.setattr(cli, "_conversation", lambda *args: conversation)
    cli.ask("what is 2 + 2?", max_tokens=8, temperature=0.0, seed=None)
    assert conversation.options == [{"max_tokens": 8, "temperature": 0.0, "seed": None, "one_shot": True}]
    assert conversation.closed and capsys.readouterr().out == "ok\n"


def test_chat_turns_are_never_one_shot():
    conversation = RecordingConversation()
    lines = iter(["first", "second"])

    def read_line(_prompt: str) -> str:
        try:
            return next(lines)
        except StopIteration:
            raise EOFError from None

    cli.run_chat(
        conversation,
        RecordingConversation,
        read_line=read_line,
        out=io.StringIO(),
        system=None,
        sampling={"max_tokens": 8, "temperature": 0.0, "seed": None},
    )
    assert len(conversation.options) == 2
    assert all("one_shot" not in options for options in conversation.options)
