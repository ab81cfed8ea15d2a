"""The chat loop with a scripted conversation in place of the protocol: Ctrl-C stops one answer and
the conversation goes on, commands are handled here and never reach the model, cut answers are
marked. The Ctrl-C is raised where the signal lands: in the consumer, between two answer pieces."""

import io

from nitro_llm.cli.client import run_chat, show_answer
from nitro_llm.client.errors import GatewayUnreachable
from nitro_llm.client.wire import AnswerChunk

SAMPLING = {"max_tokens": 8, "temperature": 0.0, "seed": None}


class ScriptedConversation:
    """Answers each question with ``echo: <question>`` in word pieces. ``interrupt_on``: the turn
    (0-based) during which the user presses Ctrl-C after two pieces; ``fail_on``: a turn whose stream
    is cut by the protocol; ``length_on``: a turn cut by max_tokens."""

    def __init__(self, *, interrupt_on=None, fail_on=None, length_on=None):
        self.sent = []  # the messages of every stream() call, as the model would have seen them
        self.closed_streams = 0
        self.closed = False
        self.interrupt_on, self.fail_on, self.length_on = interrupt_on, fail_on, length_on

    def stream(self, messages, **sampling):
        turn = len(self.sent)
        self.sent.append([dict(m) for m in messages])
        words = ("echo: " + messages[-1]["content"]).split(" ")
        try:
            for i, word in enumerate(words):
                if i == 2 and turn == self.interrupt_on:
                    raise KeyboardInterrupt  # SIGINT arrives while the answer streams
                if i == 2 and turn == self.fail_on:
                    raise GatewayUnreachable("lost the gateway at http://gateway.test (ReadError)")
                last = i == len(words) - 1
                reason = ("length" if turn == self.length_on else "stop") if last else None
                yield AnswerChunk(word if i == 0 else " " + word, final=last, finish_reason=reason)
        finally:
            self.closed_streams += 1

    def close(self):
        self.closed = True


def chat(lines, conv, *, reopen=None):
    """Run the loop over ``lines`` (an item KeyboardInterrupt stands for Ctrl-C at the prompt)."""
    feed = iter(lines)
    prompts = []

    def read_line(prompt):
        prompts.append(prompt)
        item = next(feed, EOFError)
        if isinstance(item, type) and issubclass(item, BaseException):
            raise item
        return item

    out = io.StringIO()
    run_chat(
        conv,
        reopen or (lambda: ScriptedConversation()),
        read_line=read_line,
        out=out,
        system=None,
        sampling=SAMPLING,
    )
    return out.getvalue(), prompts


def test_ctrl_c_while_streaming_stops_that_answer_and_keeps_the_conversation():
    conv = ScriptedConversation(interrupt_on=1)
    out, prompts = chat(["first question", "second question here", "third one"], conv)
    assert len(conv.sent) == 3  # the chat went on after the Ctrl-C
    assert conv.closed_streams == 3  # the stopped answer's stream was closed (HTTP stream left)
    # the stopped turn is left out; the earlier, complete turn is kept
    assert conv.sent[2] == [
        {"role": "user", "content": "first question"},
        {"role": "assistant", "content": "echo: first question"},
        {"role": "user", "content": "third one"},
    ]
    assert "llm> echo: second\n[answer cut off: stopped (Ctrl-C)]\n" in out
    assert out.endswith("llm> echo: third one\n")
    assert len(prompts) == 4 and conv.closed


def test_ctrl_c_at_the_prompt_clears_the_line_and_twice_leaves():
    conv = ScriptedConversation()
    ctrl_c = KeyboardInterrupt
    _out, prompts = chat(["hello", ctrl_c, "still here", ctrl_c, ctrl_c], conv)
    assert [m[-1]["content"] for m in conv.sent] == ["hello", "still here"]
    assert len(prompts) == 5 and conv.closed


def test_help_and_unknown_commands_never_reach_the_model(capsys):
    conv = ScriptedConversation()
    out, _ = chat(["/help", "/frobnicate now", "/HELP", "real question"], conv)
    assert len(conv.sent) == 1 and conv.sent[0] == [{"role": "user", "content": "real question"}]
    err = capsys.readouterr().err
    assert "/new" in err and "/exit" in err and "Ctrl-C" in err  # the help text
    assert "unknown command /frobnicate, /help lists them" in err
    assert "frobnicate" not in out


def test_a_double_slash_sends_a_line_that_starts_with_a_slash():
    conv = ScriptedConversation()
    chat(["//etc/hosts holds what?"], conv)
    assert conv.sent[0][-1]["content"] == "/etc/hosts holds what?"


def test_new_starts_a_fresh_conversation_and_closes_the_old_one():
    first, second = ScriptedConversation(), ScriptedConversation()
    chat(["one", "/new", "two"], first, reopen=lambda: second)
    assert first.closed and len(first.sent) == 1
    assert second.sent == [[{"role": "user", "content": "two"}]]


def test_an_answer_cut_by_max_tokens_gets_a_notice():
    conv = ScriptedConversation(length_on=0)
    out, _ = chat(["tell me everything", "and more"], conv)
    assert "llm> echo: tell me everything\n[answer cut off: it reached max_tokens (8)]\n" in out
    assert conv.sent[1][1] == {"role": "assistant", "content": "echo: tell me everything"}  # kept
    assert out.count("answer cut off") == 1


def test_a_failed_stream_is_marked_and_the_turn_dropped(capsys):
    conv = ScriptedConversation(fail_on=0)
    out, _ = chat(["first question", "again"], conv)
    assert "llm> echo: first\n[answer cut off: gateway_unreachable]\n" in out
    assert conv.sent[1] == [{"role": "user", "content": "again"}]
    assert "gateway_unreachable" in capsys.readouterr().err


def test_show_answer_marks_only_what_it_printed():
    out = io.StringIO()
    text = show_answer(iter([AnswerChunk("whole", final=True, finish_reason="stop")]), out, max_tokens=5)
    assert (text, out.getvalue()) == ("whole", "whole\n")
    nothing = io.StringIO()

    def refused():
        raise GatewayUnreachable("no gateway")
        yield

    try:
        show_answer(refused(), nothing, max_tokens=5)
    except GatewayUnreachable:
        pass
    assert nothing.getvalue() == ""  # no partial answer on stdout, so nothing to mark
