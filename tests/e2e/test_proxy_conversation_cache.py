"""A chat that names itself to the proxy keeps its KV cells in the enclave between turns, end to end:
the real stack and model, the proxy's real backends, the openai SDK. The enclave's published counters
(no content) show a cache hit on every named turn after the first, and none for unnamed requests,
which the proxy keeps from sharing anything (proxy/conversations.py). The name never reaches the
gateway."""

from __future__ import annotations

import httpx
import openai
import pytest
from wire_tools import RecordingTransport, RunningServer

from nitro_llm.client.policy import ClientPolicy
from nitro_llm.proxy.app import create_app
from nitro_llm.proxy.confidential_backends import AttestedBackend, KmsBackend

pytestmark = [pytest.mark.slow, pytest.mark.model]

NAME = "proxy-e2e-chat-4f1c"
TURNS = ["Name a colour.", "Name another one.", "And one more?"]


def _hits(stack) -> int:
    stats = httpx.get(f"{stack.gateway_url}/v1/enclave/stats", timeout=10).json()
    return int(stats["kv_cache_hits"])


def _chat(client: openai.OpenAI, turns: list[str], **named) -> None:
    """Each turn sends the history so far, as an OpenAI client does."""
    messages: list[dict[str, str]] = []
    for text in turns:
        messages.append({"role": "user", "content": text})
        reply = client.chat.completions.create(
            model="default", messages=messages, max_tokens=8, temperature=0.0, **named
        )
        messages.append({"role": "assistant", "content": reply.choices[0].message.content or ""})


@pytest.mark.parametrize(
    ("protocol", "named"),
    [
        ("attested", {"extra_headers": {"X-Nitro-Conversation": NAME}}),
        ("kms", {"extra_body": {"prompt_cache_key": NAME}}),
    ],
)
def test_named_chats_hit_the_enclave_cache_and_unnamed_requests_never_do(stack, protocol, named):
    recording = RecordingTransport()
    http = httpx.Client(
        transport=recording, headers=stack.client_config().auth_headers(), timeout=httpx.Timeout(10, read=300)
    )
    if protocol == "attested":
        backend: AttestedBackend | KmsBackend = AttestedBackend(
            stack.gateway_url, ClientPolicy.load(stack.client_policy_path), http=http
        )
    else:
        backend = KmsBackend(stack.client_config(), http=http)
    with RunningServer(create_app(backend)) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
        before = _hits(stack)
        _chat(client, TURNS[:2])  # unnamed: a conversation per request, as before
        unnamed = _hits(stack)
        _chat(client, TURNS, **named)
        after = _hits(stack)
    http.close()
    assert unnamed - before == 0
    assert after - unnamed == len(TURNS) - 1  # every named turn after the first
    assert ("POST", "/v1/infer") in recording.paths()
    assert not any(NAME.encode() in body for _method, _path, body in recording.sent)
