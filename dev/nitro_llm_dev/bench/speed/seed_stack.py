"""(c) The seed's stack vs ours on the seed's architecture (Bloom-560m shape).

Seed: transformers + torch on the CPU, fp32, ``model.generate`` once per request, as the seed's
enclave did. Ours: llama.cpp on the same weights converted to GGUF (F16) and quantised (Q8_0,
Q4_0, ...). Both get the same prompt token ids and generate exactly ``tokens`` tokens greedily
(end-of-text ignored: random weights say nothing meaningful), on the same number of threads.

Reported: time to first token (prompt processed, first token out) and decode tokens/s, and for
each of ours the speed-up over the seed next to its bound — CPU decoding reads every weight once
per token, so the speed-up cannot much exceed (fp32 bytes per token) / (our bytes per token).
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from nitro_llm_dev.bench.speed.bloom_gguf import (
    BLOOM_560M,
    ensure_ggufs,
    ensure_random_bloom,
    gguf_bytes_per_token,
)
from nitro_llm_dev.bench.speed.stats import median, ratio

PROMPT_TOKENS = 32


def _prompt(vocab: int, n: int = PROMPT_TOKENS, seed: int = 7) -> list[int]:
    rng = random.Random(seed)
    return [rng.randrange(300, vocab) for _ in range(n)]


def seed_generate(
    hf_dir: Path, prompt: list[int], *, tokens: int, threads: int, repeats: int
) -> dict[str, Any]:
    import torch
    from transformers import BloomForCausalLM

    torch.set_num_threads(threads)
    model = BloomForCausalLM.from_pretrained(hf_dir, torch_dtype=torch.float32)
    model.eval()
    ids = torch.tensor([prompt])
    params = sum(p.numel() for p in model.parameters())  # tied embedding counted once

    def generate(n: int) -> float:
        start = time.perf_counter()
        with torch.inference_mode():
            out = model.generate(
                ids, max_new_tokens=n, min_new_tokens=n, do_sample=False, pad_token_id=3, eos_token_id=None
            )
        assert out.shape[1] == len(prompt) + n
        return time.perf_counter() - start

    generate(2)  # warm-up: allocator, weights paged in
    first = [generate(1) for _ in range(repeats)]
    total = [generate(tokens) for _ in range(repeats)]
    ttft, full = median(first), median(total)
    return {
        "engine": "transformers fp32 generate (seed)",
        "first_token_s": round(ttft, 4),
        "tokens_per_s": round((tokens - 1) / (full - ttft), 3) if full > ttft else 0.0,
        "bytes_per_token": 4 * params,
    }


def ours_generate(
    gguf: Path, prompt: list[int], *, tokens: int, threads: int, repeats: int
) -> dict[str, Any]:
    from nitro_llm.inference.llama_batch import Feed, LlamaBatchDecoder, Sampling

    decoder = LlamaBatchDecoder(
        gguf, n_seq=1, n_ctx_seq=max(256, len(prompt) + tokens + 8), n_threads=threads
    )
    first: list[float] = []
    rates: list[float] = []
    try:
        for run in range(repeats + 1):
            decoder.open_slot(0, Sampling())
            start = time.perf_counter()
            token = decoder.step([Feed(0, prompt, 0, True)])[0]
            ttft = time.perf_counter() - start
            pos = len(prompt)
            t1 = time.perf_counter()
            for _ in range(tokens - 1):
                token = decoder.step([Feed(0, (token,), pos, True)])[0]
                pos += 1
            decode = time.perf_counter() - t1
            decoder.close_slot(0)
            if run:  # the first run warms up
                first.append(ttft)
                rates.append((tokens - 1) / decode)
    finally:
        decoder.close()
    return {
        "first_token_s": round(median(first), 4),
        "tokens_per_s": round(median(rates), 3),
        "bytes_per_token": gguf_bytes_per_token(gguf),
        "file_bytes": gguf.stat().st_size,
    }


def bench_seed_stack(
    *,
    threads: int = 1,
    tokens: int = 32,
    quants: tuple[str, ...] = ("F16", "Q8_0", "Q4_0"),
    repeats: int = 3,
    progress: Callable[[str], None] = lambda _m: None,
    config: dict[str, Any] | None = None,
    directory: Path | None = None,
) -> dict[str, Any]:
    os.environ["HF_HUB_OFFLINE"] = "1"
    progress("random Bloom-560m-shaped weights (cached after the first run)")
    hf_dir = ensure_random_bloom(directory, config=config)
    ggufs = ensure_ggufs(hf_dir, quants, threads=max(1, os.cpu_count() or 1), progress=progress)
    prompt = _prompt(int((config or BLOOM_560M)["vocab_size"]))
    progress("seed stack: transformers fp32 generate")
    seed = seed_generate(hf_dir, prompt, tokens=tokens, threads=threads, repeats=repeats)
    rows = [seed]
    for kind in quants:
        progress(f"ours: llama.cpp {kind}")
        mine = ours_generate(ggufs[kind], prompt, tokens=tokens, threads=threads, repeats=repeats)
        speedup = ratio(mine["tokens_per_s"], seed["tokens_per_s"])
        bound = ratio(seed["bytes_per_token"], mine["bytes_per_token"])
        mine.update(
            engine=f"llama.cpp GGUF {kind} (ours)",
            speedup_vs_seed=round(speedup, 2),
            first_token_speedup=round(ratio(seed["first_token_s"], mine["first_token_s"]), 2),
            bytes_bound=round(bound, 2),
            share_of_bound=round(ratio(speedup, bound), 2),
        )
        rows.append(mine)
    return {"threads": threads, "tokens": tokens, "prompt_tokens": len(prompt), "rows": rows}
