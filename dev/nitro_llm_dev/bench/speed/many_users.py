"""(d) Many users at once: N concurrent chat sessions through the full stack.

Three numbers from the same run: one session alone (full stack), N sessions together (full stack,
aggregate tokens/s and each session's own rate), and the ceiling — llama.cpp's own batched decode
of N sequences in this process, no scheduler, no protocol, no sockets (``llama_decode`` with one
token per sequence per call, as llama.cpp's batched example does; end-of-text ignored so every
sequence decodes exactly ``max_tokens``). Each session is warmed first (its KMS data key
released), so only answering is timed. The measurements run in rounds, ceiling and sessions back
to back, and ratios are taken within a round before the median over rounds: on a shared machine
a neighbour's burst then weighs on both sides of a ratio instead of on one. No session may
starve: the slowest session's rate is reported against the fastest's. Then beyond capacity: more
simultaneous requests than ``batch_size + max_waiting``, which must be refused at once with 429
and a Retry-After header.
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nitro_llm_dev.bench.speed.protocol_path import cpu_seconds
from nitro_llm_dev.bench.speed.stats import median, ratio
from nitro_llm_dev.local.stack import LocalStack

TOPICS = [
    "a dragon who learns to cook",
    "a lighthouse keeper and a storm",
    "a robot that paints",
    "two friends crossing a desert",
    "a city under the sea",
    "a clockmaker's apprentice",
    "a fox and a winter night",
    "a journey on a night train",
    "a garden on the moon",
    "a lost violin",
    "a mountain village festival",
    "a ship made of glass",
    "a library that never closes",
    "a baker who cannot sleep",
    "a kite that flies to the stars",
    "an old map in an attic",
]


def prompt(i: int) -> list[Mapping[str, str]]:
    return [{"role": "user", "content": f"Write a long story about {TOPICS[i % len(TOPICS)]}."}]


@dataclass(frozen=True)
class Session:
    tokens: int
    seconds: float
    first_token_seconds: float

    @property
    def tokens_per_second(self) -> float:
        return self.tokens / self.seconds if self.seconds > 0 else 0.0


@dataclass
class Round:
    """One round: llama.cpp batched, N sessions, llama.cpp one sequence, one session — back to back,
    so that load from other processes at that moment weighs on the ceiling and on us alike."""

    raw_batched_tps: float
    raw_batched_decode_tps: float
    many: list[Session]
    many_wall_seconds: float
    raw_one_tps: float
    raw_one_decode_tps: float
    one: Session
    raw_batched_cpu_s: float = 0.0  # CPU time of the llama.cpp run (this process)
    enclave_cpu_s: float = 0.0  # CPU time of the enclave process while the sessions ran

    @property
    def aggregate_tps(self) -> float:
        total = sum(s.tokens for s in self.many)
        return total / self.many_wall_seconds if self.many_wall_seconds > 0 else 0.0


@dataclass
class ManyUsersResult:
    sessions: int
    max_tokens: int
    threads: int
    rounds: list[Round] = field(default_factory=list)
    overload: dict[str, Any] = field(default_factory=dict)

    def _median(self, value: Callable[[Round], float]) -> float:
        return median([value(r) for r in self.rounds]) if self.rounds else 0.0

    def summary(self) -> dict[str, Any]:
        rates = [s.tokens_per_second for r in self.rounds for s in r.many]
        spread = [
            ratio(min(x), max(x)) for x in ([s.tokens_per_second for s in r.many] for r in self.rounds) if x
        ]
        return {
            "sessions": self.sessions,
            "max_tokens": self.max_tokens,
            "threads": self.threads,
            "rounds": len(self.rounds),
            "one_session_tps": round(self._median(lambda r: r.one.tokens_per_second), 2),
            "aggregate_tps": round(self._median(lambda r: r.aggregate_tps), 2),
            "aggregate_vs_one_session": round(
                self._median(lambda r: ratio(r.aggregate_tps, r.one.tokens_per_second)), 3
            ),
            "llama_cpp_one_sequence_tps": round(self._median(lambda r: r.raw_one_tps), 2),
            "llama_cpp_batched_tps": round(self._median(lambda r: r.raw_batched_tps), 2),
            "llama_cpp_batched_vs_one": round(
                self._median(lambda r: ratio(r.raw_batched_tps, r.raw_one_tps)), 3
            ),
            "llama_cpp_decode_only_one_tps": round(self._median(lambda r: r.raw_one_decode_tps), 2),
            "llama_cpp_decode_only_batched_tps": round(self._median(lambda r: r.raw_batched_decode_tps), 2),
            "llama_cpp_decode_only_batched_vs_one": round(
                self._median(lambda r: ratio(r.raw_batched_decode_tps, r.raw_one_decode_tps)), 3
            ),
            # paired within each round, then the median over rounds
            "aggregate_vs_llama_cpp_batched": round(
                self._median(lambda r: ratio(r.aggregate_tps, r.raw_batched_tps)), 3
            ),
            "slowest_vs_fastest_session": round(min(spread), 3) if spread else 0.0,
            "max_first_token_s": round(
                max((s.first_token_seconds for r in self.rounds for s in r.many), default=0.0), 3
            ),
            "total_tokens": sum(s.tokens for r in self.rounds for s in r.many),
            "sessions_measured": len(rates),
            # CPU per generated token: equal CPU but longer wall time means the cores were busy elsewhere
            "llama_cpp_batched_cpu_ms_per_token": round(
                self._median(lambda r: 1000 * r.raw_batched_cpu_s / (self.sessions * self.max_tokens)), 2
            ),
            "enclave_cpu_ms_per_token": round(
                self._median(lambda r: 1000 * r.enclave_cpu_s / max(1, sum(s.tokens for s in r.many))), 2
            ),
            "overload": self.overload,
        }


def raw_batched_tps(
    model_path: Path, *, sequences: int, max_tokens: int, threads: int, ctx: int = 1024
) -> tuple[float, float, float]:
    """Tokens/s of llama.cpp decoding ``sequences`` prompts together: prompt processing included
    (comparable with the sessions' wall time) and decode steps only (the pure batching gain); and
    the CPU seconds the timed part took."""
    from nitro_llm.inference.llama_batch import Feed, LlamaBatchDecoder, Sampling
    from nitro_llm.protocol.messages import chat_request

    decoder = LlamaBatchDecoder(model_path, n_seq=sequences, n_ctx_seq=ctx, n_threads=threads)
    try:
        prompts = [decoder.prompt_tokens(chat_request(prompt(i)).messages) for i in range(sequences)]
        for slot in range(sequences):
            decoder.open_slot(slot, Sampling())
        start, cpu_start = time.perf_counter(), time.process_time()
        # One call per prompt: a single call with prompts of different lengths is split by llama.cpp
        # into equal-length micro-batches (one KV stream per sequence), which is slower.
        last: dict[int, int] = {}
        for slot in range(sequences):
            last.update(decoder.step([Feed(slot, prompts[slot], 0, True)]))
        decode_start = time.perf_counter()
        positions = [len(p) for p in prompts]
        for _ in range(max_tokens - 1):
            last = decoder.step([Feed(s, (last[s],), positions[s], True) for s in range(sequences)])
            positions = [p + 1 for p in positions]
        end, cpu_end = time.perf_counter(), time.process_time()
        return (
            sequences * max_tokens / (end - start),
            sequences * (max_tokens - 1) / (end - decode_start),
            cpu_end - cpu_start,
        )
    finally:
        decoder.close()


def _session(stack: LocalStack, index: int, max_tokens: int, barrier: threading.Barrier | None) -> Session:
    from nitro_llm.client.kms_conversation import KmsConversation

    conv = KmsConversation(stack.client_config())
    conv.ask([{"role": "user", "content": "Hi."}], max_tokens=1)  # data key released before timing
    if barrier is not None:
        barrier.wait(60)
    start = time.perf_counter()
    first = None
    tokens = 0
    for chunk in conv.stream(prompt(index), max_tokens=max_tokens, temperature=0.0, seed=0):
        if chunk.text and first is None:
            first = time.perf_counter() - start
        if chunk.final and chunk.usage:
            tokens = int(chunk.usage.get("completion_tokens", 0))
    seconds = time.perf_counter() - start
    conv.close()
    return Session(tokens, seconds, first if first is not None else seconds)


def _overload(stack: LocalStack, token: str, requests: int, capacity: int) -> dict[str, Any]:
    from nitro_llm.client.kms_conversation import KmsConversation

    conv = KmsConversation(stack.client_config())
    conv.ask([{"role": "user", "content": "Hi."}], max_tokens=1)
    bodies = [conv.seal(prompt(i), max_tokens=48, temperature=0.0)[1].to_cbor() for i in range(requests)]
    statuses: list[int] = []
    retry_after: list[str | None] = []
    lock = threading.Lock()
    barrier = threading.Barrier(requests)
    headers = {"authorization": f"Bearer {token}", "content-type": "application/cbor"}

    def send(body: bytes) -> None:
        with httpx.Client(timeout=httpx.Timeout(10.0, read=300.0)) as client:
            barrier.wait(60)
            reply = client.post(f"{stack.gateway_url}/v1/infer", content=body, headers=headers)
        with lock:
            statuses.append(reply.status_code)
            retry_after.append(reply.headers.get("retry-after"))

    threads = [threading.Thread(target=send, args=(b,)) for b in bodies]
    for t in threads:
        t.start()
    for t in threads:
        t.join(600)
    refused = [r for s, r in zip(statuses, retry_after, strict=True) if s in (429, 503)]
    return {
        "requests": requests,
        "capacity": capacity,
        "statuses": dict(Counter(statuses)),
        "refused": len(refused),
        "refused_with_retry_after": sum(1 for r in refused if r),
    }


def bench_many_users(
    stack: LocalStack,
    token: str,
    model_path: Path,
    *,
    sessions: int = 8,
    max_tokens: int = 64,
    threads: int = 1,
    capacity: int = 16,
    rounds: int = 3,
) -> ManyUsersResult:
    result = ManyUsersResult(sessions=sessions, max_tokens=max_tokens, threads=threads)
    enclave_pid = stack.enclave_proc.pid if stack.enclave_proc is not None else None
    for _ in range(max(1, rounds)):
        batched, batched_decode, raw_cpu = raw_batched_tps(
            model_path, sequences=sessions, max_tokens=max_tokens, threads=threads
        )
        enclave_before: list[float | None] = [None]

        def at_start(mark: list[float | None] = enclave_before) -> None:  # all sessions warmed up
            mark[0] = cpu_seconds(enclave_pid) if enclave_pid else None

        barrier = threading.Barrier(sessions, action=at_start)
        out: list[Session | None] = [None] * sessions

        def run(i: int, barrier: threading.Barrier = barrier, out: list[Session | None] = out) -> None:
            out[i] = _session(stack, i, max_tokens, barrier)

        workers = [threading.Thread(target=run, args=(i,)) for i in range(sessions)]
        for t in workers:
            t.start()
        for t in workers:
            t.join(900)
        many = [s for s in out if s is not None]
        enclave_after = cpu_seconds(enclave_pid) if enclave_pid else None
        one_tps, one_decode, _cpu = raw_batched_tps(
            model_path, sequences=1, max_tokens=max_tokens, threads=threads
        )
        result.rounds.append(
            Round(
                raw_batched_tps=batched,
                raw_batched_decode_tps=batched_decode,
                many=many,
                # the group's wall time: all start at the barrier, the last answer ends it
                many_wall_seconds=max((s.seconds for s in many), default=0.0),
                raw_one_tps=one_tps,
                raw_one_decode_tps=one_decode,
                one=_session(stack, 0, max_tokens, None),
                raw_batched_cpu_s=raw_cpu,
                enclave_cpu_s=(
                    enclave_after - enclave_before[0] if enclave_before[0] and enclave_after else 0.0
                ),
            )
        )
    result.overload = _overload(stack, token, capacity + sessions, capacity)
    return result
