"""(f) Inference threads: 1 against N (default: the CPUs this process may use), prefill and decode.

One context, its thread count switched between measurements (``llama_set_n_threads``), the two
counts alternating within each round so that a neighbour's burst weighs on both; medians over rounds,
ratios N-over-1 (above 1: N threads are faster). The machine's other load during the run is
reported beside them (CPU busy time of everything but this process, in cores, from /proc/stat):
llama.cpp's worker threads spin at every barrier of the graph (hundreds per token), so a thread
that loses its core to another process stalls all of them, and N threads on N shared cores can be
many times slower than one. Prefill is compute-bound (matrix-matrix) and gains most from threads;
decoding one sequence of a small model is many small operations, each ending in a barrier.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from nitro_llm_dev.bench.speed.stats import median


def _busy_jiffies() -> tuple[int, int] | None:
    """(busy, total) jiffies of all CPUs since boot; None where /proc/stat does not exist."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)
    return sum(fields) - idle, sum(fields)


def run_threads_bench(
    model_path: Path | None = None,
    *,
    threads: int | None = None,
    rounds: int = 5,
    prompt_tokens: int = 256,
    decode_tokens: int = 32,
) -> dict[str, Any]:
    """Tokens/s at 1 and ``threads`` threads for prefill (one ``prompt_tokens`` prompt) and decode
    (``decode_tokens`` steps of one sequence); ``{"threads", "cpus", "other_load_cores",
    "prefill": {"1": tps, "N": tps, "ratio": N/1}, "decode": {...}}``."""
    from nitro_llm.inference.llama_batch import Feed, LlamaBatchDecoder, Sampling, available_cpus
    from nitro_llm.inference.model import default_model_path
    from nitro_llm.protocol.messages import Message

    cpus = available_cpus()
    n = threads or cpus
    decoder = LlamaBatchDecoder(model_path or default_model_path(), n_seq=1, n_ctx_seq=1024, n_threads=1)
    lc, ctx = decoder._lc, decoder._ctx
    text = "Tell me a long story about a dragon who learns to cook, with many details. " * 40
    prompt = decoder.prompt_tokens([Message("user", text)])[:prompt_tokens]
    samples: dict[tuple[int, str], list[float]] = {(t, k): [] for t in (1, n) for k in ("prefill", "decode")}
    jiffies_before, cpu_before, wall_before = _busy_jiffies(), time.process_time(), time.monotonic()
    try:
        for r in range(rounds + 1):  # round 0 warms up and is not counted
            for t in (1, n) if r % 2 else (n, 1):
                lc.llama_set_n_threads(ctx, t, t)
                decoder.open_slot(0, Sampling())
                start = time.perf_counter()
                token = decoder.step([Feed(0, prompt, 0, sample=True)])[0]
                prefill = len(prompt) / (time.perf_counter() - start)
                start = time.perf_counter()
                for i in range(decode_tokens):
                    token = decoder.step([Feed(0, (token,), len(prompt) + i, sample=True)])[0]
                decode = decode_tokens / (time.perf_counter() - start)
                if r:
                    samples[(t, "prefill")].append(prefill)
                    samples[(t, "decode")].append(decode)
    finally:
        decoder.close()
    jiffies_after, cpu_after, wall_after = _busy_jiffies(), time.process_time(), time.monotonic()
    other = None
    if jiffies_before and jiffies_after:
        tick = os.sysconf("SC_CLK_TCK")
        busy = (jiffies_after[0] - jiffies_before[0]) / tick
        other = round(max(0.0, busy - (cpu_after - cpu_before)) / (wall_after - wall_before), 2)
    out: dict[str, Any] = {"threads": n, "cpus": cpus, "rounds": rounds, "other_load_cores": other}
    for kind in ("prefill", "decode"):
        one, many = median(samples[(1, kind)]), median(samples[(n, kind)])
        out[kind] = {"1": round(one, 1), str(n): round(many, 1), "ratio": round(many / one, 3)}
    return out


if __name__ == "__main__":  # python -m nitro_llm_dev.bench.speed.threads
    import json

    print(json.dumps(run_threads_bench(), indent=2))
