"""Run the chosen scenarios in one process and collect their results as one JSON-able dict.

One stack with the echo engine for (b) and (e), one with the model for (a), (d), (f) and (i) (which
adds llama-cpp-python's own server and two ``nitro-llm proxy`` processes beside it); (c) needs no
stack; (g) starts its own two (1 and N threads), (h) its own fleets behind HAProxy and (j) its own
``nitro-llm up`` processes, after the others have stopped. The echo stack allows more waiting
requests than the default (so concurrency 32 measures the path, not the queue bound); the model
stack runs the shipped defaults.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from nitro_llm_dev.bench.speed.machine import describe_machine
from nitro_llm_dev.bench.speed.stacks import running_stack, unlimited_token

DEFAULT_SCENARIOS = "abde"


@dataclass
class BenchOptions:
    scenarios: str = DEFAULT_SCENARIOS
    threads: int = 1
    max_tokens: int = 64
    repeats: int = 7
    sessions: int = 8
    batch_size: int = 8
    max_waiting: int = 8
    ctx: int = 8192
    concurrency: tuple[int, ...] = (1, 8, 32)
    seconds: float = 3.0
    seed_tokens: int = 32
    seed_quants: tuple[str, ...] = ("F16", "Q8_0", "Q4_0")
    conversation_turns: int = 8
    conversation_rounds: int = 3
    thread_rounds: int = 3
    peer_rounds: int = 3
    startup_rounds: int = 3
    command: str = "nitro-llm bench"
    extra: dict[str, Any] = field(default_factory=dict)


def run_bench(options: BenchOptions, progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    started = time.monotonic()
    results: dict[str, Any] = {"machine": describe_machine(), "options": asdict(options)}
    wanted = set(options.scenarios)
    timings: dict[str, float] = {}

    if wanted & {"b", "e"}:
        progress("echo stack: starting")
        with running_stack(
            engine="echo", threads=options.threads, max_waiting=max(64, max(options.concurrency))
        ) as stack:
            token = unlimited_token(stack)
            if "b" in wanted:
                from nitro_llm_dev.bench.speed.protocol_path import bench_protocol

                progress("(b) protocol path, echo engine")
                t0 = time.monotonic()
                protocol = bench_protocol(
                    stack, token, concurrency=options.concurrency, seconds=options.seconds
                )
                results["b"] = protocol.rows()
                timings["b"] = time.monotonic() - t0
            if "e" in wanted:
                from nitro_llm_dev.bench.speed.kms_calls import bench_kms_calls

                progress("(e) KMS calls over a 10-turn chat")
                t0 = time.monotonic()
                results["e"] = bench_kms_calls(stack)
                timings["e"] = time.monotonic() - t0

    if wanted & {"a", "d", "f", "i"}:
        from nitro_llm.inference.model import default_model_path

        model = default_model_path()
        progress("model stack: starting")
        with running_stack(
            engine="llama",
            threads=options.threads,
            batch_size=options.batch_size,
            max_waiting=options.max_waiting,
            ctx=options.ctx,
        ) as stack:
            token = unlimited_token(stack)
            if "a" in wanted:
                from nitro_llm_dev.bench.speed.overhead import bench_overhead

                progress("(a) overhead: full stack vs direct llama.cpp")
                t0 = time.monotonic()
                overhead = bench_overhead(
                    stack,
                    str(model),
                    threads=options.threads,
                    ctx=options.ctx,
                    max_tokens=options.max_tokens,
                    repeats=options.repeats,
                )
                from nitro_llm_dev.bench.speed.crypto_costs import crypto_costs

                results["a"] = {
                    "rows": overhead.rows(),
                    "cold_first_request_s": overhead.cold_first_request_seconds,
                    "max_tokens": options.max_tokens,
                    "crypto": crypto_costs(),
                }
                timings["a"] = time.monotonic() - t0
            if "d" in wanted:
                from nitro_llm_dev.bench.speed.many_users import bench_many_users

                progress(f"(d) {options.sessions} sessions vs one, vs llama.cpp batched")
                t0 = time.monotonic()
                many = bench_many_users(
                    stack,
                    token,
                    model,
                    sessions=options.sessions,
                    max_tokens=options.max_tokens,
                    threads=options.threads,
                    capacity=options.batch_size + options.max_waiting,
                )
                results["d"] = many.summary()
                timings["d"] = time.monotonic() - t0
            if "f" in wanted:
                from nitro_llm_dev.bench.speed.conversation import bench_conversation

                progress(f"(f) a {options.conversation_turns}-turn chat, with and without the KV cache")
                t0 = time.monotonic()
                results["f"] = bench_conversation(
                    stack, turns=options.conversation_turns, rounds=options.conversation_rounds
                )
                timings["f"] = time.monotonic() - t0
            if "i" in wanted:
                from nitro_llm_dev.bench.speed.peer import bench_peer

                progress("(i) the peer: llama_cpp.server vs our proxy and clients, same model and threads")
                t0 = time.monotonic()
                results["i"] = bench_peer(
                    stack,
                    model,
                    threads=options.threads,
                    ctx=options.ctx,
                    max_tokens=options.max_tokens,
                    sessions=options.sessions,
                    turns=options.conversation_turns,
                    rounds=options.peer_rounds,
                    single_rounds=options.repeats,
                    progress=progress,
                )
                timings["i"] = time.monotonic() - t0

    if "h" in wanted:
        from nitro_llm_dev.bench.speed.fleet_hop import bench_fleet_hop

        progress("(h) the balancer hop: fleets of 1, 2, 3 replicas, through HAProxy vs direct")
        t0 = time.monotonic()
        results["h"] = bench_fleet_hop(seconds=options.seconds, progress=progress)
        timings["h"] = time.monotonic() - t0

    if "c" in wanted:
        from nitro_llm_dev.bench.speed.seed_stack import bench_seed_stack

        progress("(c) seed stack (transformers fp32) vs GGUF on the Bloom-560m shape")
        t0 = time.monotonic()
        results["c"] = bench_seed_stack(
            threads=options.threads, tokens=options.seed_tokens, quants=options.seed_quants, progress=progress
        )
        timings["c"] = time.monotonic() - t0

    if "g" in wanted:
        from nitro_llm_dev.bench.speed.threads import bench_threads

        t0 = time.monotonic()
        results["g"] = bench_threads(
            lambda n: running_stack(engine="llama", threads=n, batch_size=2, max_waiting=2, ctx=4096),
            rounds=options.thread_rounds,
            progress=progress,
        )
        timings["g"] = time.monotonic() - t0

    if "j" in wanted:
        from nitro_llm_dev.bench.speed.startup import bench_startup

        t0 = time.monotonic()
        results["j"] = bench_startup(rounds=options.startup_rounds, progress=progress)
        timings["j"] = time.monotonic() - t0

    results["machine"]["load_average_1m_end"] = describe_machine()["load_average_1m"]
    results["seconds"] = round(time.monotonic() - started, 1)
    results["scenario_seconds"] = {k: round(v, 1) for k, v in timings.items()}
    results["finished_at"] = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    return results
