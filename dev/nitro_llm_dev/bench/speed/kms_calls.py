"""(e) KMS calls per request over a 10-turn chat.

The seed called KMS Decrypt for every request. Here the client asks KMS for one data key per
conversation and the enclave, after one Decrypt with its attestation document, keeps the released
key in its bounded, expiring cache — so a 10-turn chat should cost exactly one Decrypt. Counted by
the enclave itself (its pong counters), not estimated.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from nitro_llm_dev.bench.speed.stacks import enclave_stats
from nitro_llm_dev.local.stack import LocalStack

SEED_DECRYPTS_PER_REQUEST = 1


class _CountingKms:
    """The client's real KMS client, counting the calls the conversation makes through it."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self.calls: dict[str, int] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._client, name)
        if not callable(method):
            return method

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args, **kwargs)

        return counted


def bench_kms_calls(stack: LocalStack, *, turns: int = 10) -> dict[str, Any]:
    from nitro_llm.client.kms_conversation import KmsConversation
    from nitro_llm.kms.client import make_kms_client

    config = stack.client_config()
    kms = _CountingKms(make_kms_client(config.kms_endpoint, config.credentials, config.region))
    before = enclave_stats(stack)
    conv = KmsConversation(config, kms=kms)
    history: list[Mapping[str, str]] = []
    for turn in range(turns):
        history.append({"role": "user", "content": f"turn {turn}: say something"})
        history.append({"role": "assistant", "content": conv.ask(history, max_tokens=8)})
    conv.close()
    after = enclave_stats(stack)
    decrypts = int(after["kms_decrypt_calls"]) - int(before["kms_decrypt_calls"])  # type: ignore[call-overload]
    hits = int(after["data_key_cache_hits"]) - int(before["data_key_cache_hits"])  # type: ignore[call-overload]
    return {
        "turns": turns,
        "kms_decrypt_calls": decrypts,
        "client_kms_calls": dict(kms.calls),
        "data_key_cache_hits": hits,
        "decrypts_per_request": round(decrypts / turns, 3),
        "seed_decrypts": turns * SEED_DECRYPTS_PER_REQUEST,
        "ratio_vs_seed": round(decrypts / (turns * SEED_DECRYPTS_PER_REQUEST), 3),
    }
