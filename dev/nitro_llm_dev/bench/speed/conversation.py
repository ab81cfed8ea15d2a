"""(e) A conversation: time to first token per turn, with and without the per-conversation KV cache.

Directly on the engine (``BatchScheduler`` over ``LlamaBatchDecoder``, greedy, no protocol, no
sockets): an eight-turn chat in which every turn sends the whole history, as a chat client does.
Without the cache every turn prefills that history again, so the first token comes later each turn;
with it a turn prefills only what the conversation added (the new question and the template's few
tokens around it).

Three ways to run the same conversation, interleaved within each round so that a neighbour's burst
on a shared machine weighs on all of them, medians over rounds:

- ``uncached``: no cache key (today's behaviour before the cache, and still that of key-less calls);
- ``cached``: a key, and the next turn sent once the engine has kept the previous one (a person
  reading the answer gives it that time; the engine re-prefills the answer's cells meanwhile so
  cached answers stay bit-identical, see ``BatchScheduler._settle``);
- ``cached_back_to_back``: a key, the next turn sent the moment the answer ends (a script): the
  turn takes the slot over and prefills whatever the engine had not settled yet.

The headline is turn-8 over turn-1 time to first token per way (goal <= 1.3 with the cache), and
whether the cached answers equal the uncached ones word for word.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from nitro_llm_dev.bench.speed.stats import median

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


def _conversation(
    engine: Any, key: bytes | None, turns: int, max_tokens: int, settle: bool
) -> dict[str, Any]:
    from nitro_llm.protocol.messages import Message

    messages: list[Message] = []
    ttft: list[float] = []
    prompt_tokens: list[int] = []
    answers: list[str] = []
    for turn in range(turns):
        messages.append(Message("user", QUESTIONS[turn % len(QUESTIONS)]))
        start = time.perf_counter()
        first: float | None = None
        parts: list[str] = []
        for chunk in engine.generate(
            list(messages), max_tokens=max_tokens, temperature=0.0, seed=None, cache_key=key
        ):
            if first is None:
                first = time.perf_counter() - start
            parts.append(chunk.text)
            if chunk.final and chunk.usage is not None and chunk.usage.prompt_tokens is not None:
                prompt_tokens.append(chunk.usage.prompt_tokens)
        ttft.append(first if first is not None else time.perf_counter() - start)
        answers.append("".join(parts))
        messages.append(Message("assistant", answers[-1]))
        if settle:
            engine.wait_idle(120)
    if key is not None:
        engine.evict(key)
    engine.wait_idle(120)
    return {"ttft": ttft, "prompt_tokens": prompt_tokens, "answers": answers}


def run_conversation_bench(
    model_path: Path | None = None,
    *,
    turns: int = 8,
    rounds: int = 3,
    max_tokens: int = 48,
    threads: int = 1,
    ctx: int = 4096,
) -> dict[str, Any]:
    """Time to first token per turn of one ``turns``-turn conversation in each way (``MODES``).

    Returns ``{"turns", "rounds", "threads", "prompt_tokens": [...per turn], "same_answers": bool,
    "modes": {mode: {"ttft_seconds": [...median per turn], "last_over_first": float}},
    "cached_over_uncached_last_turn": float, "cache": {...engine counters}}``.
    """
    from nitro_llm.inference.batching import BatchScheduler
    from nitro_llm.inference.llama_batch import LlamaBatchDecoder
    from nitro_llm.inference.model import default_model_path

    decoder = LlamaBatchDecoder(model_path or default_model_path(), n_seq=2, n_ctx_seq=ctx, n_threads=threads)
    engine = BatchScheduler(decoder, name="bench", ctx=ctx, max_waiting=2)
    try:
        _conversation(engine, None, 1, 4, True)  # warm-up: first-call costs out of the timings
        runs: dict[str, list[dict[str, Any]]] = {mode: [] for mode in MODES}
        for r in range(rounds):
            order = MODES if r % 2 == 0 else tuple(reversed(MODES))
            for mode in order:
                key = None if mode == "uncached" else f"bench-{mode}-{r}".encode()
                runs[mode].append(
                    _conversation(engine, key, turns, max_tokens, mode != "cached_back_to_back")
                )
        modes: dict[str, Any] = {}
        for mode, results in runs.items():
            per_turn = [median([res["ttft"][t] for res in results]) for t in range(turns)]
            modes[mode] = {
                "ttft_seconds": [round(x, 4) for x in per_turn],
                "last_over_first": round(per_turn[-1] / per_turn[0], 3),
            }
        reference = runs["uncached"][0]["answers"]
        same = all(res["answers"] == reference for results in runs.values() for res in results)
        last = {mode: modes[mode]["ttft_seconds"][-1] for mode in MODES}
        return {
            "turns": turns,
            "rounds": rounds,
            "threads": threads,
            "max_tokens": max_tokens,
            "prompt_tokens": runs["uncached"][0]["prompt_tokens"],
            "same_answers": same,
            "modes": modes,
            "cached_over_uncached_last_turn": round(last["cached"] / last["uncached"], 3),
            "cache": engine.cache_stats(),
        }
    finally:
        engine.close()


if __name__ == "__main__":  # python -m nitro_llm_dev.bench.speed.conversation
    import json

    print(json.dumps(run_conversation_bench(), indent=2))
