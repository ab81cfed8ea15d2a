"""(g) Inference threads: 1 against N (default: the CPUs this process may use), prefill and decode.

Three measurements in one run, each alternating the two counts within every round so that a
neighbour's burst weighs on both; medians over rounds, ratios N-over-1 (above 1: N threads are
faster):

- in process, the machine as it is: one llama.cpp context, its thread count switched between
  measurements (``llama_set_n_threads``);
- the same with a busy neighbour: a process of ours spinning on one CPU for the whole measurement
  (what a shared machine, or the enclave's own busy threads, do to llama.cpp);
- through the enclave path: two local stacks (enclave image, gateway), one started with 1 thread and
  one with N, the same question sent to each in turn (``AttestedConversation``, nothing cached):
  time to first token (prefill) and streamed tokens per second (decode) as a client sees them.

The machine's other load during each in-process part is reported beside it (CPU busy time of
everything but this process, in cores, from /proc/stat). llama.cpp's worker threads spin at every
barrier of the graph (hundreds per token), so a thread that loses its core to another process
stalls all of them, and N threads on N shared cores can be many times slower than one. Prefill is
compute-bound (matrix-matrix) and gains most from threads; decoding one sequence of a small model
is many small operations, each ending in a barrier. The enclave's default ("auto",
nitro_llm/enclave/threads.py) is checked against the through-the-stack winner.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

import httpx

from nitro_llm_dev.bench.speed.stats import median
from nitro_llm_dev.local.stack import LocalStack

STACK_QUESTION = (
    "Here are my notes from today's meeting: "
    + "the team reviewed the budget, the schedule and the open risks, and agreed on next steps. " * 12
    + "Summarise them in one sentence."
)


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
    rounds: int = 3,
    prompt_tokens: int = 128,
    decode_tokens: int = 16,
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


@contextlib.contextmanager
def busy_neighbour() -> Iterator[int]:
    """A process spinning on one CPU until the block ends (ours: started here, stopped by its pid)."""
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        yield proc.pid
    finally:
        proc.kill()
        proc.wait(10)


def _timed_answer(client: Any, max_tokens: int) -> tuple[float, float]:
    """(seconds to the first token, streamed tokens per second after it) for one answer."""
    start = time.perf_counter()
    first: float | None = None
    tokens = 0
    for chunk in client.stream([{"role": "user", "content": STACK_QUESTION}], max_tokens=max_tokens):
        if first is None:
            first = time.perf_counter() - start
        if chunk.final and chunk.usage:
            tokens = int(chunk.usage.get("completion_tokens", 0))
    end = time.perf_counter() - start
    first = end if first is None else first
    return first, (tokens - 1) / (end - first) if tokens > 1 and end > first else 0.0


def bench_threads_through(
    stacks: Mapping[int, LocalStack], *, rounds: int = 3, max_tokens: int = 32
) -> dict[str, Any]:
    """Through each stack (keyed by its enclave's thread count) in turn, the same uncached question:
    ``{"first_token_s": {n: s}, "decode_tokens_per_s": {n: tps}, "prefill_ratio", "decode_ratio"}``,
    ratios of the largest count over the smallest (above 1: more threads are faster)."""
    from nitro_llm.client.attested_conversation import AttestedConversation
    from nitro_llm.client.policy import ClientPolicy

    clients = {}
    for n, stack in stacks.items():
        http = httpx.Client(
            headers=stack.client_config().auth_headers(), timeout=httpx.Timeout(10.0, read=300.0)
        )
        clients[n] = AttestedConversation(
            stack.gateway_url, ClientPolicy.load(stack.client_policy_path), http=http, remember=False
        )
    samples: dict[int, list[tuple[float, float]]] = {n: [] for n in clients}
    try:
        for client in clients.values():  # warm-up: attestation, model pages
            _timed_answer(client, 2)
        order = sorted(clients)
        for r in range(rounds):
            for n in order if r % 2 == 0 else list(reversed(order)):
                samples[n].append(_timed_answer(clients[n], max_tokens))
    finally:
        for client in clients.values():
            client.close()
    first = {n: round(median([s[0] for s in runs]), 4) for n, runs in samples.items()}
    decode = {n: round(median([s[1] for s in runs]), 2) for n, runs in samples.items()}
    low, high = min(samples), max(samples)
    return {
        "rounds": rounds,
        "max_tokens": max_tokens,
        "first_token_s": {str(n): v for n, v in first.items()},
        "decode_tokens_per_s": {str(n): v for n, v in decode.items()},
        "prefill_ratio": round(first[low] / first[high], 3) if first[high] else None,
        "decode_ratio": round(decode[high] / decode[low], 3) if decode[low] else None,
    }


def bench_threads(
    stack_for: Callable[[int], contextlib.AbstractContextManager[LocalStack]],
    *,
    threads: int | None = None,
    rounds: int = 3,
    progress: Callable[[str], None] = lambda _m: None,
) -> dict[str, Any]:
    """The three measurements above; ``stack_for(n)`` starts a local stack whose enclave runs n
    threads. Also ``"auto"`` (what the enclave's default picks here) and ``"faster_through_stack"``."""
    from nitro_llm.enclave.threads import auto_threads
    from nitro_llm.inference.llama_batch import available_cpus

    cpus = available_cpus()
    n = threads or max(2, cpus)
    progress(f"(g) threads 1 vs {n}: in process, machine as it is")
    out: dict[str, Any] = {"cpus": cpus, "threads": n, "auto": auto_threads(cpus)}
    out["in_process"] = run_threads_bench(threads=n, rounds=rounds)
    progress(f"(g) threads 1 vs {n}: in process, one CPU kept busy by a neighbour")
    with busy_neighbour():
        out["in_process_neighbour_busy"] = run_threads_bench(threads=n, rounds=rounds)
    progress(f"(g) threads 1 vs {n}: through the enclave path (two stacks)")
    with stack_for(1) as one, stack_for(n) as many:
        out["through_stack"] = through = bench_threads_through({1: one, n: many}, rounds=rounds)
    # Through the stack decides: prefill and decode both, weighed as a chat's answer is (its first
    # token, then its stream). More threads win only if they win both.
    prefill, decode = through["prefill_ratio"] or 0, through["decode_ratio"] or 0
    out["faster_through_stack"] = n if prefill > 1 and decode > 1 else 1
    return out
