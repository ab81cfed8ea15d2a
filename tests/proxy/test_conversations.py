"""A caller names its chat (X-Nitro-Conversation or prompt_cache_key); the proxy maps the name to state
it drew at random, bounded and expiring, and passes the backend nothing when no name was given.
What the gateway receives is tests/proxy/test_backends.py's; the enclave's cache, tests/e2e."""

from __future__ import annotations

import itertools

import pytest
from fastapi.testclient import TestClient

from nitro_llm.proxy.app import create_app
from nitro_llm.proxy.conversations import ConversationTable, conversation_name
from nitro_llm.proxy.errors import ConversationNameError

NAME = "chat-7f3a-guessable"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _table(**options):
    counter = itertools.count()
    return ConversationTable(lambda: next(counter), **options)


def test_a_name_keeps_its_state_and_two_names_never_share_one():
    table = _table()
    first, other = table.get("a"), table.get("b")
    assert table.get("a") == first and table.get("b") == other and first != other
    assert table.drawn == 2 and len(table) == 2


def test_the_table_keeps_no_name():
    table = _table()
    table.get(NAME)
    kept = repr(vars(table)) + repr(list(table._entries))
    assert NAME not in kept and NAME.encode().hex() not in kept


def test_least_recently_used_names_go_first():
    table = _table(max_entries=2)
    a, b = table.get("a"), table.get("b")
    table.get("a")  # used again: "b" is now the oldest
    table.get("c")
    assert len(table) == 2 and table.get("a") == a
    assert table.get("b") != b  # forgotten: a new conversation, drawn afresh


def test_an_idle_name_is_forgotten_and_a_used_one_is_kept():
    clock = FakeClock()
    table = _table(idle_seconds=600, clock=clock)
    a, b = table.get("a"), table.get("b")
    clock.now += 599
    assert table.get("a") == a  # used within the idle time: kept, and its idle time starts again
    clock.now += 1
    assert len(table) == 1  # "b" has been idle for 600 s
    assert table.get("b") != b
    clock.now += 598  # 599 s since "a" was last used
    assert table.get("a") == a


@pytest.mark.parametrize(
    ("headers", "field", "name"),
    [
        ([], None, None),
        ([NAME], None, NAME),
        ([], NAME, NAME),
        ([NAME], NAME, NAME),
    ],
    ids=["none", "header", "prompt_cache_key", "both-agree"],
)
def test_where_a_name_comes_from(headers, field, name):
    assert conversation_name(headers, field) == name


@pytest.mark.parametrize(
    ("headers", "field"),
    [
        ([NAME, NAME + "x"], None),
        ([NAME], NAME + "x"),
        ([""], None),
        ([], ""),
        ([], "x" * 257),
        ([], 42),
        ([], NAME + "\n"),
        ([" " + NAME], None),
    ],
    ids=[
        "header-twice",
        "disagree",
        "empty-header",
        "empty-field",
        "too-long",
        "not-text",
        "control",
        "padded",
    ],
)
def test_a_malformed_or_ambiguous_name_is_refused_without_quoting_it(headers, field):
    with pytest.raises(ConversationNameError) as info:
        conversation_name(headers, field)
    assert NAME not in str(info.value) and "xxxx" not in str(info.value)


def _ask(client, headers=None, **body):
    return client.post(
        "/v1/chat/completions",
        json={"model": "m", "messages": [{"role": "user", "content": "hi"}], **body},
        headers=headers or {},
    )


def test_the_backend_is_given_the_name_only_when_the_caller_gave_one(echo_backend):
    backend = echo_backend()
    client = TestClient(create_app(backend, allowed_hosts=None))
    assert _ask(client).status_code == 200
    assert _ask(client, user="alice", metadata={"chat": "1"}).status_code == 200  # neither names a chat
    assert _ask(client, {"X-Nitro-Conversation": NAME}).status_code == 200
    assert _ask(client, prompt_cache_key=NAME).status_code == 200
    assert [call.get("conversation", "unnamed") for call in backend.calls] == [
        "unnamed",
        "unnamed",
        NAME,
        NAME,
    ]
    assert all("conversation" not in call for call in backend.calls[:2])


def test_a_refused_name_is_an_openai_error_and_nothing_is_sent(echo_backend):
    backend = echo_backend()
    client = TestClient(create_app(backend, allowed_hosts=None))
    reply = _ask(client, {"X-Nitro-Conversation": NAME}, prompt_cache_key="another chat")
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["type"] == "invalid_request_error" and error["code"] == "invalid_conversation"
    assert NAME not in reply.text and "another chat" not in reply.text
    assert backend.calls == []
