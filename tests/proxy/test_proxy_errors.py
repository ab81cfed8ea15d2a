"""Every error the proxy answers is OpenAI's error object, with the status and code OpenAI clients act
on: a context overflow is a 400 ``context_length_exceeded`` (the SDK raises BadRequestError, and
frameworks trim the history), unknown paths and methods are not FastAPI's ``{"detail": ...}``, and no
message points an HTTP user at a Python module."""

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from nitro_llm.client.wire import frame_error
from nitro_llm.inference.errors import ContextOverflowError
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.errors import EnvelopeError
from nitro_llm.proxy.app import create_app

QUESTION = {"model": "x", "messages": [{"role": "user", "content": "hi"}]}


class RefusingBackend:
    """Refuses as the real backends do when the enclave sends an error frame before any answer: the
    client turns the frame into a typed error (``frame_error``), which the proxy then maps."""

    model_id = "refusing-model"

    def __init__(self, enclave_error):
        self.error = frame_error(frame_kinds.error_frame(enclave_error))

    def stream(self, messages, *, max_tokens, temperature, seed):
        raise self.error
        yield  # a generator, like the real backends

    def describe(self):
        return {"protocol": "kms", "verified": True, "failure_reason": None, "pcrs": {}}


def _sdk(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused", max_retries=0)


@pytest.mark.parametrize("stream", [False, True])
def test_context_overflow_is_a_400_the_sdk_raises_as_bad_request(serve, stream):
    overflow = ContextOverflowError("the conversation does not fit in the model's context window")
    with serve(create_app(RefusingBackend(overflow))) as server:
        with pytest.raises(openai.BadRequestError) as info:
            reply = _sdk(server).chat.completions.create(**QUESTION, stream=stream)
            if stream:
                list(reply)
        raw = httpx.post(server.url + "/v1/chat/completions", json=QUESTION)
    assert info.value.status_code == 400
    assert info.value.code == "context_length_exceeded"
    assert raw.status_code == 400
    error = raw.json()["error"]
    assert error["type"] == "invalid_request_error" and error["param"] == "messages"
    assert "context window" in error["message"]


@pytest.mark.parametrize(
    ("method", "path", "status", "code"),
    [
        ("GET", "/v1/no-such-thing", 404, "not_found"),
        ("POST", "/v1/completions", 404, "not_found"),
        ("GET", "/v1/chat/completions", 405, "method_not_allowed"),
        ("DELETE", "/v1/models", 405, "method_not_allowed"),
    ],
)
def test_unknown_paths_and_methods_use_openais_error_object(echo_backend, method, path, status, code):
    client = TestClient(create_app(echo_backend(), allowed_hosts=None))
    reply = client.request(method, path)
    assert reply.status_code == status
    body = reply.json()
    assert "detail" not in body
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    assert body["error"]["code"] == code and body["error"]["type"] == "invalid_request_error"
    assert path in body["error"]["message"]
    if status == 405:
        assert reply.headers["allow"]


def test_the_sdk_sees_a_typed_not_found(echo_backend, serve):
    with serve(create_app(echo_backend())) as server:
        with pytest.raises(openai.NotFoundError) as info:
            _sdk(server).completions.create(model="x", prompt="hi")  # the legacy API: not served
    assert info.value.code == "not_found"


def test_hints_never_name_python_modules(echo_backend):
    schema = TestClient(create_app(echo_backend(), allowed_hosts=None)).post(
        "/v1/chat/completions", json={**QUESTION, "temperature": 9}
    )
    assert schema.status_code == 400 and schema.json()["error"]["code"] == "bad_request"
    envelope = TestClient(create_app(RefusingBackend(EnvelopeError("the envelope has no header")))).post(
        "/v1/chat/completions", json=QUESTION, headers={"host": "127.0.0.1"}
    )
    assert envelope.json()["error"]["code"] == "bad_envelope"
    for reply in (schema, envelope):
        message = reply.json()["error"]["message"]
        assert "nitro_llm" not in message, message
    assert "platform.openai.com" in schema.json()["error"]["message"]  # a hint a caller can use
    assert "no header" in envelope.json()["error"]["message"]


def test_healthz(echo_backend, serve):
    with serve(create_app(echo_backend())) as server:
        reply = httpx.get(server.url + "/healthz")
    assert reply.status_code == 200 and reply.json()["status"] == "ok"
    assert reply.headers["cache-control"] == "no-store"
