"""(f) A conversation: time to first token per turn, with and without the enclave's KV cache.

Through the real path: the client `nitro-llm chat` uses (``AttestedConversation``: verified
enclave, HPKE-sealed turns), the gateway, the enclave process running the image, its scheduler. An
eight-turn chat in which every turn sends the whole history, as a chat client does. Without the
cache every turn prefills that history again, so the first token comes later each turn; with it a
turn prefills only what the conversation added (the new question and the template's few tokens).

Three ways to run the same conversation, interleaved within each round so that a neighbour's burst
on a shared machine weighs on all of them, medians over rounds:

- ``uncached``: the client sends no conversation secret (``remember=False``, what older clients
  and the proxy do): the enclave keeps nothing, every turn prefills everything;
- ``cached``: a secret, and the next turn sent once the enclave has kept the previous one (its
  stats show nothing queued or settling: a person reading the answer gives it that time; the
  engine re-prefills the answer's cells meanwhile so cached answers stay bit-identical);
- ``cached_back_to_back``: a secret, the next turn sent the moment the answer ends (a script): the
  turn takes the slot over and prefills whatever the engine had not settled yet.

The headline is turn-8 over turn-1 time to first token per way (goal <= 1.3 with the cache), and
whether the cached answers equal the uncached ones word for word. Turn 1 and turn 8 ask different
questions, of different lengths, and turn 1 starts from the enclave's public prefix (the template's
system prompt, prefilled at start), so each round also asks turn 8's question alone, as a new chat:
turn 8 over that is what the seven turns of history add, and nothing else. The enclave's own counters
(cache hits, prompt tokens prefilled) for the whole run are reported beside them.
"""

from __future__ import annotations

import time
from typing import Any

import httpx

from nitro_llm_dev.bench.speed.stacks import BenchStackError, enclave_stats
from nitro_llm_dev.bench.speed.stats import median
from nitro_llm_dev.local.stack import LocalStack

QUESTIONS = [
    "What is the capital of France?",
    "What river runs through it?",
    "Name three famous museums there.",
    "Which one is the largest, and what is in it?",
    "How would I get there from the main train station?",
    "What else is worth seeing nearby?",
    "Suggest a place to eat in that area.",
    "Summarise our plan for the day in three sentences.",
]
MODES = ("uncached", "cached", "cached_back_to_back")
COUNTERS = ("kv_cache_hits", "kv_cache_misses", "kv_cache_reused_tokens", "prefilled_tokens")
_SETTLE_TIMEOUT = 120.0
_POLL_SECONDS = 0.05


def wait_settled(stack: LocalStack, timeout: float = _SETTLE_TIMEOUT) -> dict[str, object]:
    """Until the enclave has nothing queued and no answered turn still being kept; its stats then."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        stats = enclave_stats(stack)
        if stats.get("queued") == 0 and not stats.get("kv_cache_settling"):
            return stats
        time.sleep(_POLL_SECONDS)
    raise BenchStackError("the enclave did not settle its conversation in time")


def _conversation(
    stack: LocalStack, mode: str, turns: int, max_tokens: int, start_at: int = 0
) -> dict[str, Any]:
    """One chat of ``turns`` turns, asking ``QUESTIONS`` from index ``start_at`` on."""
    from nitro_llm.client.attested_conversation import AttestedConversation
    from nitro_llm.client.policy import ClientPolicy

    http = httpx.Client(headers=stack.client_config().auth_headers(), timeout=httpx.Timeout(10.0, read=300.0))
    client = AttestedConversation(
        stack.gateway_url, ClientPolicy.load(stack.client_policy_path), http=http, remember=mode != "uncached"
    )
    client.verify()  # attestation is per client, not per turn: out of the timings
    messages: list[dict[str, str]] = []
    ttft: list[float] = []
    prompt_tokens: list[int] = []
    prefilled: list[int] = []  # per turn, from the enclave's counter ("cached" only: turns spaced)
    answers: list[str] = []
    seen = enclave_stats(stack)
    try:
        for turn in range(turns):
            messages.append({"role": "user", "content": QUESTIONS[(start_at + turn) % len(QUESTIONS)]})
            start = time.perf_counter()
            first: float | None = None
            parts: list[str] = []
            for chunk in client.stream(list(messages), max_tokens=max_tokens, temperature=0.0):
                if first is None:
                    first = time.perf_counter() - start
                parts.append(chunk.text)
                if chunk.final and chunk.usage:
                    prompt_tokens.append(int(chunk.usage.get("prompt_tokens", 0)))
            ttft.append(first if first is not None else time.perf_counter() - start)
            answers.append("".join(parts))
            messages.append({"role": "assistant", "content": answers[-1]})
            if mode == "cached":
                now = wait_settled(stack)
                prefilled.append(_count(now, "prefilled_tokens") - _count(seen, "prefilled_tokens"))
                seen = now
    finally:
        client.close()
    wait_settled(stack)  # the next conversation starts on an idle enclave, whatever the mode
    return {"ttft": ttft, "prompt_tokens": prompt_tokens, "prefilled": prefilled, "answers": answers}


def bench_conversation(
    stack: LocalStack, *, turns: int = 8, rounds: int = 3, max_tokens: int = 48
) -> dict[str, Any]:
    """Time to first token per turn of one ``turns``-turn conversation in each way (``MODES``).

    Returns ``{"turns", "rounds", "max_tokens", "prompt_tokens": [...per turn],
    "cached_prefilled_tokens": [...per turn, the enclave's count], "same_answers",
    "modes": {mode: {"ttft_seconds": [...median per turn], "last_over_first": float}},
    "cached_over_uncached_last_turn": float, "last_question_alone_ttft_seconds": float,
    "last_turn_over_its_question_alone": float (cached, paired per round, median),
    "enclave": {counter: delta over the run}}``.
    """
    _conversation(stack, "cached", 1, 4)  # warm-up: first-call costs out of the timings
    before = enclave_stats(stack)
    runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
    alone: list[float] = []  # turn ``turns``'s question, asked as a new chat's first
    for r in range(rounds):
        for mode in MODES if r % 2 == 0 else tuple(reversed(MODES)):
            runs[mode].append(_conversation(stack, mode, turns, max_tokens))
        alone.append(_conversation(stack, "cached", 1, max_tokens, start_at=turns - 1)["ttft"][0])
    after = enclave_stats(stack)
    modes: dict[str, Any] = {}
    for mode, results in runs.items():
        per_turn = [median([res["ttft"][t] for res in results]) for t in range(turns)]
        modes[mode] = {
            "ttft_seconds": [round(x, 4) for x in per_turn],
            "last_over_first": round(per_turn[-1] / per_turn[0], 3),
        }
    reference = runs["uncached"][0]["answers"]
    last = {mode: modes[mode]["ttft_seconds"][-1] for mode in MODES}
    return {
        "turns": turns,
        "rounds": rounds,
        "max_tokens": max_tokens,
        "threads": after.get("threads"),
        "prompt_tokens": runs["uncached"][0]["prompt_tokens"],
        "cached_prefilled_tokens": [
            int(median([r["prefilled"][t] for r in runs["cached"]])) for t in range(turns)
        ],
        "same_answers": all(res["answers"] == reference for results in runs.values() for res in results),
        "modes": modes,
        "cached_over_uncached_last_turn": round(last["cached"] / last["uncached"], 3),
        "last_question_alone_ttft_seconds": round(median(alone), 4),
        "last_turn_over_its_question_alone": round(
            median([res["ttft"][-1] / a for res, a in zip(runs["cached"], alone, strict=True) if a > 0]), 3
        ),
        "enclave": {k: _count(after, k) - _count(before, k) for k in COUNTERS},
    }


def _count(stats: dict[str, object], name: str) -> int:
    value = stats.get(name, 0)
    return value if isinstance(value, int) else 0
