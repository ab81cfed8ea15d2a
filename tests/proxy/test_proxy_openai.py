"""The official openai SDK, unchanged, talks to the proxy; errors keep OpenAI's shape."""

import base64
import hashlib
import re

import httpx
import openai
import pytest
from fastapi.testclient import TestClient

from nitro_llm.proxy.app import create_app


def _client(server):
    return openai.OpenAI(base_url=server.url + "/v1", api_key="unused-by-the-proxy", max_retries=0)


def test_openai_sdk_non_streamed(echo_backend, serve):
    backend = echo_backend()
    with serve(create_app(backend)) as server:
        reply = _client(server).chat.completions.create(
            model="echo-test-model",
            messages=[
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is 2 + 2"},
            ],
            max_tokens=32,
            temperature=0.3,
            seed=7,
        )
    assert reply.choices[0].message.content == "echo: what is 2 + 2"
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage.completion_tokens == 6 and reply.usage.total_tokens == 13
    assert reply.model == "echo-test-model" and reply.id.startswith("chatcmpl-")
    assert backend.calls == [
        {
            "messages": [
                {"role": "system", "content": "be brief"},
                {"role": "user", "content": "what is 2 + 2"},
            ],
            "max_tokens": 32,
            "temperature": 0.3,
            "seed": 7,
        }
    ]


def test_openai_sdk_streamed(echo_backend, serve):
    with serve(create_app(echo_backend())) as server:
        stream = _client(server).chat.completions.create(
            model="echo-test-model",
            messages=[{"role": "user", "content": "stream me a few words"}],
            stream=True,
            stream_options={"include_usage": True},
        )
        chunks = list(stream)
    deltas = [c.choices[0].delta.content for c in chunks if c.choices and c.choices[0].delta.content]
    assert len(deltas) == 6  # one SSE event per backend chunk: it really streams
    assert "".join(deltas) == "echo: stream me a few words"
    finals = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert finals == ["stop"]
    assert chunks[-1].usage.completion_tokens == 6


def test_openai_sdk_lists_the_model(echo_backend, serve):
    with serve(create_app(echo_backend())) as server:
        models = _client(server).models.list()
        assert [m.id for m in models.data] == ["echo-test-model"]
        assert _client(server).models.retrieve("echo-test-model").id == "echo-test-model"


def test_content_parts_and_developer_role_are_understood(echo_backend):
    backend = echo_backend()
    client = TestClient(create_app(backend, allowed_hosts=None))
    body = {
        "model": "x",
        "messages": [
            {"role": "developer", "content": "rules"},
            {
                "role": "user",
                "content": [{"type": "text", "text": "part one, "}, {"type": "text", "text": "two"}],
            },
        ],
    }
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200
    assert reply.json()["choices"][0]["message"]["content"] == "echo: part one, two"
    assert backend.calls[0]["messages"][0] == {"role": "system", "content": "rules"}
    assert backend.calls[0]["temperature"] == 0.0  # deterministic unless asked


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"model": "x", "messages": []}, "invalid_request"),
        ({"messages": [{"role": "user", "content": "hi"}]}, "invalid_request"),
        ({"model": "x", "messages": [{"role": "assistant", "content": "hi"}]}, "bad_request"),
        ({"model": "x", "messages": [{"role": "tool", "content": "hi"}]}, "unsupported_feature"),
        (
            {"model": "x", "messages": [{"role": "user", "content": "hi"}], "tools": [{"type": "function"}]},
            "unsupported_feature",
        ),
        ({"model": "x", "messages": [{"role": "user", "content": "hi"}], "n": 2}, "unsupported_feature"),
        ({"model": "x", "messages": [{"role": "user", "content": "hi"}], "temperature": 9}, "bad_request"),
        (
            {"model": "x", "messages": [{"role": "user", "content": [{"type": "image_url"}]}]},
            "unsupported_feature",
        ),
    ],
)
def test_bad_requests_get_openai_error_shape_and_reach_no_backend(echo_backend, body, code):
    backend = echo_backend()
    reply = TestClient(create_app(backend, allowed_hosts=None)).post("/v1/chat/completions", json=body)
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert set(error) >= {"message", "type", "code"}
    assert error["type"] == "invalid_request_error" and error["code"] == code
    assert backend.calls == []


def test_openai_sdk_raises_typed_errors(echo_backend, serve):
    with serve(create_app(echo_backend())) as server:
        with pytest.raises(openai.BadRequestError) as info:
            _client(server).chat.completions.create(
                model="x", messages=[{"role": "user", "content": ""}], n=3
            )
    assert info.value.code == "unsupported_feature"


def test_non_json_and_foreign_hosts_are_refused(echo_backend):
    client = TestClient(create_app(echo_backend()), base_url="http://127.0.0.1:8000")
    reply = client.post(
        "/v1/chat/completions", content=b'{"model":"x"}', headers={"content-type": "text/plain"}
    )
    assert reply.status_code == 415 and reply.json()["error"]["code"] == "unsupported_media_type"
    rebound = client.get("/v1/models", headers={"host": "attacker.example"})
    assert rebound.status_code == 400
    assert client.get("/v1/models", headers={"host": "localhost:8000"}).status_code == 200


def test_unverified_enclave_blocks_before_the_backend_is_asked(echo_backend):
    backend = echo_backend(verified=False)
    client = TestClient(create_app(backend, allowed_hosts=None))
    reply = client.post(
        "/v1/chat/completions", json={"model": "x", "messages": [{"role": "user", "content": "hi"}]}
    )
    assert reply.status_code == 403
    assert reply.json()["error"]["code"] == "enclave_not_verified"
    assert "PCR0 differs" in reply.json()["error"]["message"]
    assert backend.calls == []
    assert client.get("/v1/verification").json()["verified"] is False


def test_failure_before_the_first_chunk_is_an_http_error(echo_backend):
    client = TestClient(create_app(echo_backend(fail_before=True), allowed_hosts=None))
    body = {"model": "x", "messages": [{"role": "user", "content": "hi"}], "stream": True}
    reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 503  # retryable: the gateway was unreachable
    assert reply.json()["error"]["code"] == "gateway_unreachable"


def test_failure_mid_stream_is_an_error_event_without_done(echo_backend, serve):
    """A replayed chunk detected by the protocol after the answer started: the SDK raises, and the raw
    stream has no [DONE], so no client can take the partial answer for a whole one."""
    body = {"model": "x", "messages": [{"role": "user", "content": "one two three four"}], "stream": True}
    with serve(create_app(echo_backend(fail_after=2))) as server:
        raw = httpx.post(server.url + "/v1/chat/completions", json=body).text
        with pytest.raises(openai.APIError, match="arrived again"):
            list(_client(server).chat.completions.create(**body))
    assert "[DONE]" not in raw
    assert '"code":"response_chunk_replayed"' in raw
    assert raw.count('"content"') == 3  # role chunk, then two words: nothing after the failure


def test_web_chat_is_self_contained_and_pinned_by_csp(echo_backend):
    client = TestClient(create_app(echo_backend(), allowed_hosts=None))
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    html = page.text
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html)  # no external assets
    assert "@import" not in html and "url(http" not in html
    csp = page.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "connect-src 'self'" in csp and "unsafe-inline" not in csp
    for block in re.findall(r"<script>(.*?)</script>", html, flags=re.S) + re.findall(
        r"<style>(.*?)</style>", html, flags=re.S
    ):
        digest = base64.b64encode(hashlib.sha256(block.encode()).digest()).decode()
        assert f"'sha256-{digest}'" in csp
    assert page.headers["cache-control"] == "no-store"
    assert client.get("/v1/verification").json()["pcrs"]["0"] == "a1" * 48
