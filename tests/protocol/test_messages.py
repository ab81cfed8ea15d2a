import pytest

from nitro_llm.protocol.errors import RequestSchemaError
from nitro_llm.protocol.messages import (
    MAX_MESSAGE_CHARS,
    MAX_MESSAGES,
    MAX_TOKENS_LIMIT,
    ChatRequest,
    Message,
    chat_request,
)


def _req(**over):
    base = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 16, "temperature": 0.0}
    base.update(over)
    return base


def test_valid_round_trip():
    data = _req(
        messages=[
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": "a"},
            {"role": "assistant", "content": "b"},
            {"role": "user", "content": "q" * 20_000},
        ],
        seed=7,
    )
    req = ChatRequest.from_dict(data)
    assert req.to_dict() == data
    assert req.messages[0] == Message("system", "be brief")


def test_repr_hides_content():
    req = chat_request([{"role": "user", "content": "CANARY-PHI-123"}])
    assert "CANARY" not in repr(req)
    assert "CANARY" not in repr(req.messages[0])


@pytest.mark.parametrize(
    "data",
    [
        {"max_tokens": 1, "temperature": 0},  # no messages
        _req(extra=1),
        _req(messages=[]),
        _req(messages="hi"),
        _req(messages=[{"role": "robot", "content": "x"}]),
        _req(messages=[{"role": "user", "content": 5}]),
        _req(messages=[{"role": "user", "content": "x", "name": "n"}]),
        _req(messages=[{"role": "user"}]),
        _req(messages=[{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]),
        _req(
            messages=[
                {"role": "user", "content": "x"},
                {"role": "system", "content": "y"},
                {"role": "user", "content": "z"},
            ]
        ),
        _req(messages=[{"role": "user", "content": "x" * (MAX_MESSAGE_CHARS + 1)}]),
        _req(messages=[{"role": "user", "content": "x"}] * (MAX_MESSAGES + 1)),
        _req(max_tokens=0),
        _req(max_tokens=MAX_TOKENS_LIMIT + 1),
        _req(max_tokens=True),
        _req(max_tokens=1.5),
        _req(temperature=-0.1),
        _req(temperature=2.5),
        _req(temperature=float("nan")),
        _req(temperature="0"),
        _req(seed=-1),
        _req(seed=2**32),
        _req(seed=False),
        [1, 2],
    ],
)
def test_invalid_requests_are_refused(data):
    with pytest.raises(RequestSchemaError):
        ChatRequest.from_dict(data)


def test_total_size_limit():
    many = [{"role": "user", "content": "x" * MAX_MESSAGE_CHARS}] * 5
    with pytest.raises(RequestSchemaError, match="conversation"):
        ChatRequest.from_dict(_req(messages=many))


def test_integer_temperature_accepted():
    assert ChatRequest.from_dict(_req(temperature=1)).temperature == 1


# --- one_shot: "no turn follows", sealed with the question ------------------------------------


def test_one_shot_round_trips_as_true():
    data = _req(one_shot=True)
    req = ChatRequest.from_dict(data)
    assert req.one_shot is True
    assert req.to_dict() == data
    assert "one_shot=True" in repr(req)


def test_one_shot_is_absent_when_unused():
    req = ChatRequest.from_dict(_req())
    assert req.one_shot is False
    assert "one_shot" not in req.to_dict()  # byte-identical to a request from before the field
    assert "one_shot" not in chat_request([{"role": "user", "content": "hi"}], one_shot=False).to_dict()


def test_chat_request_passes_one_shot_through():
    req = chat_request([{"role": "user", "content": "hi"}], max_tokens=8, one_shot=True)
    assert req.one_shot is True and req.to_dict()["one_shot"] is True


@pytest.mark.parametrize("value", [False, None, 1, 0, "true", [True], {"x": True}])
def test_one_shot_has_one_encoding_and_anything_else_is_refused(value):
    with pytest.raises(RequestSchemaError, match="one_shot"):
        ChatRequest.from_dict(_req(one_shot=value))


def test_one_shot_beside_an_unknown_field_is_still_refused():
    with pytest.raises(RequestSchemaError, match="oneshot"):
        ChatRequest.from_dict(_req(one_shot=True, oneshot=True))


@pytest.mark.parametrize("value", [1, "yes", None])
def test_a_non_bool_one_shot_cannot_be_built_either(value):
    with pytest.raises(RequestSchemaError, match="one_shot"):
        ChatRequest(messages=(Message("user", "hi"),), one_shot=value)
