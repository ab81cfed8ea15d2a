import pytest

from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol import frames
from nitro_llm.protocol.errors import FrameError, RemoteError


def test_credentials_round_trip_and_repr_hides_secret():
    creds = frames.Credentials("AKIAEXAMPLE", "SECRET-CANARY", "TOKEN-CANARY", "2030-01-01T00:00:00Z")
    assert frames.read_credentials(frames.credentials_frame(creds)) == creds
    assert "CANARY" not in repr(creds)
    assert creds.to_boto() == {
        "access_key_id": "AKIAEXAMPLE",
        "secret_access_key": "SECRET-CANARY",
        "session_token": "TOKEN-CANARY",
    }
    no_token = frames.Credentials("AKIA", "s")
    assert frames.read_credentials(frames.credentials_frame(no_token)) == no_token
    assert "session_token" not in no_token.to_boto()


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "credentials", "access_key_id": "a", "secret_access_key": "b", "session_token": None},
        {
            "t": "credentials",
            "access_key_id": "",
            "secret_access_key": "b",
            "session_token": None,
            "expiration": None,
        },
        {
            "t": "credentials",
            "access_key_id": "a",
            "secret_access_key": 5,
            "session_token": None,
            "expiration": None,
        },
        {
            "t": "credentials",
            "access_key_id": "a",
            "secret_access_key": "b",
            "session_token": b"x",
            "expiration": None,
        },
        {
            "t": "credentials",
            "access_key_id": "a",
            "secret_access_key": "b",
            "session_token": None,
            "expiration": 1.5,
        },
        {
            "t": "ping",
            "access_key_id": "a",
            "secret_access_key": "b",
            "session_token": None,
            "expiration": None,
        },
    ],
)
def test_bad_credentials_frames(frame):
    with pytest.raises(FrameError):
        frames.read_credentials(frame)


def test_infer_and_ping():
    assert frames.read_infer(frames.infer_frame(b"abc")) == b"abc"
    frames.read_ping(frames.ping_frame())
    for bad in (
        {"t": "infer"},
        {"t": "infer", "envelope": ""},
        {"t": "infer", "envelope": b""},
        {"t": "infer", "envelope": b"x", "y": 1},
    ):
        with pytest.raises(FrameError):
            frames.read_infer(bad)
    with pytest.raises(FrameError):
        frames.read_ping({"t": "ping", "x": 1})


def test_error_frame_round_trip():
    class Boom(NitroLLMError):
        code = "boom"
        retryable = True

    frame = frames.error_frame(Boom("it broke", hint="try again"))
    assert frame == {
        "t": "error",
        "code": "boom",
        "message": "it broke",
        "hint": "try again",
        "retryable": True,
    }
    err = frames.read_error(frame)
    assert isinstance(err, RemoteError)
    assert (err.code, err.message, err.hint, err.retryable) == ("boom", "it broke", "try again", True)
    with pytest.raises(FrameError):
        frames.read_error({**frame, "retryable": "yes"})
