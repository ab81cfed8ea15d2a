"""A chat keeps its KV cells in the enclave between turns, end to end: real processes, the real model,
the clients `nitro-llm chat` uses. The enclave's published counters (no content) show a cache hit on
every turn after the first, in both protocols."""

from __future__ import annotations

import httpx
import pytest

from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm.client.policy import ClientPolicy

pytestmark = [pytest.mark.slow, pytest.mark.model]

TURNS = ["Name a colour.", "Name another one.", "And one more?"]
COUNTERS = (
    "kv_cache_hits",
    "kv_cache_misses",
    "kv_cache_reused_tokens",
    "prefilled_tokens",
    "kv_cache_public_reused_tokens",
)


def _stats(stack) -> dict:
    return httpx.get(f"{stack.gateway_url}/v1/enclave/stats", timeout=10).json()


def _chat(conversation) -> list[int]:
    """Three turns, each sending the history so far; the prompt tokens of each turn."""
    messages: list[dict[str, str]] = []
    prompts = []
    for text in TURNS:
        messages.append({"role": "user", "content": text})
        chunks = list(conversation.stream(messages, max_tokens=12, temperature=0.0))
        prompts.append(chunks[-1].usage["prompt_tokens"])
        messages.append({"role": "assistant", "content": "".join(c.text for c in chunks)})
    return prompts


@pytest.mark.parametrize("protocol", ["kms", "attested"])
def test_turns_after_the_first_reuse_the_conversation_cells(stack, protocol):
    if protocol == "kms":
        conversation = KmsConversation(stack.client_config())
    else:
        http = httpx.Client(headers=stack.client_config().auth_headers(), timeout=httpx.Timeout(10, read=300))
        conversation = AttestedConversation(
            stack.gateway_url, ClientPolicy.load(stack.client_policy_path), http=http
        )
    before = _stats(stack)
    try:
        prompts = _chat(conversation)
    finally:
        conversation.close()
    after = _stats(stack)
    hits, misses, reused, prefilled, public = (after[k] - before[k] for k in COUNTERS)
    assert (hits, misses) == (len(TURNS) - 1, 1)
    assert reused > prompts[0]  # at least the whole first question was not prefilled again
    # the first turn started from the template's prefilled prefix, each later one from the turn before
    assert 0 < public == after["kv_cache_public_prefix_tokens"] < prompts[0]
    assert prefilled == sum(prompts) - reused - public  # each turn prefilled only what it added
