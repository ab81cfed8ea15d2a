import pytest

from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.errors import EnclaveReportedError, FrameError


def test_credentials_round_trip_and_repr_hides_secret():
    creds = frame_kinds.Credentials("AKIAEXAMPLE", "SECRET-CANARY", "TOKEN-CANARY", "2030-01-01T00:00:00Z")
    assert frame_kinds.read_credentials(frame_kinds.credentials_frame(creds)) == creds
    assert "CANARY" not in repr(creds)
    assert creds.to_boto() == {
        "access_key_id": "AKIAEXAMPLE",
        "secret_access_key": "SECRET-CANARY",
        "session_token": "TOKEN-CANARY",
    }
    no_token = frame_kinds.Credentials("AKIA", "s")
    assert frame_kinds.read_credentials(frame_kinds.credentials_frame(no_token)) == no_token
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
        frame_kinds.read_credentials(frame)


def test_infer_and_ping():
    assert frame_kinds.read_infer(frame_kinds.infer_frame(b"abc")) == b"abc"
    frame_kinds.read_ping(frame_kinds.ping_frame())
    for bad in (
        {"t": "infer"},
        {"t": "infer", "envelope": ""},
        {"t": "infer", "envelope": b""},
        {"t": "infer", "envelope": b"x", "y": 1},
    ):
        with pytest.raises(FrameError):
            frame_kinds.read_infer(bad)
    with pytest.raises(FrameError):
        frame_kinds.read_ping({"t": "ping", "x": 1})


def test_infer_frame_may_name_its_protocol():
    named = frame_kinds.infer_frame(b"abc", protocol="kms")
    assert named == {"t": "infer", "envelope": b"abc", "p": "kms"}
    assert frame_kinds.read_infer(named) == b"abc" and frame_kinds.read_infer_protocol(named) == "kms"
    assert frame_kinds.read_infer_protocol(frame_kinds.infer_frame(b"abc")) is None
    for bad in ("", "x" * 33, 7, b"kms", True):
        with pytest.raises(FrameError):
            frame_kinds.read_infer({"t": "infer", "envelope": b"abc", "p": bad})


def test_error_frame_round_trip():
    class Boom(NitroLLMError):
        code = "boom"
        retryable = True

    frame = frame_kinds.error_frame(Boom("it broke", hint="try again"))
    assert frame == {
        "t": "error",
        "code": "boom",
        "message": "it broke",
        "hint": "try again",
        "retryable": True,
    }
    err = frame_kinds.read_error(frame)
    assert isinstance(err, EnclaveReportedError)
    assert (err.code, err.message, err.hint, err.retryable) == ("boom", "it broke", "try again", True)
    with pytest.raises(FrameError):
        frame_kinds.read_error({**frame, "retryable": "yes"})
