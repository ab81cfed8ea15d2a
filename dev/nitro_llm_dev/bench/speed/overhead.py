"""(a) What confidentiality costs per request: the full stack vs a direct llama.cpp call.

Same model file, same threads, same prompt, greedy, same ``max_tokens``. The full stack path is
client -> gateway (HTTP) -> enclave (Unix socket standing in for vsock) -> model -> sealed chunks
back, with each protocol: "kms" (AES-GCM under a KMS data key; the key is released once per
conversation, so the conversation is warmed up first and its cold first request reported apart)
and "attested" (HPKE to an enclave the client verified; verification is cached, also warmed).
The direct call is llama-cpp-python's ``create_chat_completion`` in this process with its prompt
cache reset each time, so both sides process the whole prompt. Runs alternate between the paths
so that load from other processes hits both alike. Medians are reported, and the paired ratio:
each stack run divided by the direct run just before it, the median of those — a neighbour's
burst then lands on both sides of a ratio. The target is judged on the paired ratio.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from nitro_llm_dev.bench.speed.stats import median, ratio
from nitro_llm_dev.local.stack import LocalStack

PROMPT: list[Mapping[str, str]] = [
    {"role": "user", "content": "Write a long story about a dragon who learns to cook."}
]


@dataclass(frozen=True)
class Run:
    seconds: float
    first_token_seconds: float
    tokens: int
    text: str = field(repr=False)

    @property
    def decode_tokens_per_second(self) -> float:
        """Tokens after the first, per second after the first: the steady streaming rate."""
        span = self.seconds - self.first_token_seconds
        return (self.tokens - 1) / span if self.tokens > 1 and span > 0 else 0.0


@dataclass
class PathResult:
    name: str
    runs: list[Run] = field(default_factory=list)

    @property
    def latency(self) -> float:
        return median([r.seconds for r in self.runs])

    @property
    def first_token(self) -> float:
        return median([r.first_token_seconds for r in self.runs])

    @property
    def tokens_per_second(self) -> float:
        return median([r.decode_tokens_per_second for r in self.runs])

    @property
    def tokens(self) -> int:
        return int(median([r.tokens for r in self.runs]))


@dataclass
class OverheadResult:
    max_tokens: int
    threads: int
    direct: PathResult
    paths: list[PathResult]
    cold_first_request_seconds: float | None = None

    def rows(self) -> list[dict[str, Any]]:
        base = self.direct
        out = []
        for path in [base, *self.paths]:
            out.append(
                {
                    "path": path.name,
                    "tokens": path.tokens,
                    "latency_s": round(path.latency, 4),
                    "first_token_ms": round(path.first_token * 1000, 1),
                    "tokens_per_s": round(path.tokens_per_second, 2),
                    "latency_ratio": round(ratio(path.latency, base.latency), 4),
                    "tokens_per_s_ratio": round(ratio(path.tokens_per_second, base.tokens_per_second), 4),
                    "paired_latency_ratio": round(
                        median(
                            [ratio(m.seconds, d.seconds) for m, d in zip(path.runs, base.runs, strict=True)]
                        ),
                        4,
                    ),
                    "paired_tokens_per_s_ratio": round(
                        median(
                            [
                                ratio(m.decode_tokens_per_second, d.decode_tokens_per_second)
                                for m, d in zip(path.runs, base.runs, strict=True)
                            ]
                        ),
                        4,
                    ),
                    "same_text_as_direct": all(r.text == base.runs[0].text for r in path.runs),
                }
            )
        return out


def _timed(chunks: Iterator[Any], text_of: Callable[[Any], str], tokens_of: Callable[[Any], int]) -> Run:
    start = time.perf_counter()
    first: float | None = None
    pieces: list[str] = []
    tokens = 0
    for chunk in chunks:
        text = text_of(chunk)
        if text and first is None:
            first = time.perf_counter() - start
        pieces.append(text)
        tokens = max(tokens, tokens_of(chunk))
    total = time.perf_counter() - start
    return Run(total, first if first is not None else total, tokens, "".join(pieces))


def direct_runner(model_path: str, *, threads: int, ctx: int, max_tokens: int) -> Callable[[], Run]:
    from llama_cpp import Llama

    llm = Llama(model_path=model_path, n_threads=threads, n_threads_batch=threads, n_ctx=ctx, verbose=False)

    def run() -> Run:
        llm.reset()  # no prompt-cache reuse between runs: the enclave processes every prompt too
        counted = [0]

        def text_of(part: Any) -> str:
            text = part["choices"][0]["delta"].get("content") or ""
            if text:
                counted[0] += 1
            return text

        stream = llm.create_chat_completion(
            messages=PROMPT,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            temperature=0.0,
            top_k=1,
            seed=0,
            stream=True,
        )
        return _timed(stream, text_of, lambda _p: counted[0])  # type: ignore[arg-type]

    return run


def stack_runners(stack: LocalStack, *, max_tokens: int) -> dict[str, Callable[[], Run]]:
    from nitro_llm.client.attested_conversation import AttestedConversation
    from nitro_llm.client.kms_conversation import KmsConversation
    from nitro_llm.client.policy import ClientPolicy

    config = stack.client_config()
    kms = KmsConversation(config)

    def usage_tokens(chunk: Any) -> int:
        usage = getattr(chunk, "usage", None) or {}
        return int(usage.get("completion_tokens", 0))

    def run_kms() -> Run:
        return _timed(
            kms.stream(PROMPT, max_tokens=max_tokens, temperature=0.0, seed=0), lambda c: c.text, usage_tokens
        )

    runners = {"full stack, kms protocol": run_kms}
    policy_path = getattr(stack, "client_policy_path", None)
    if policy_path is not None and policy_path.exists():
        http = httpx.Client(headers=config.auth_headers(), timeout=httpx.Timeout(10.0, read=300.0))
        attested = AttestedConversation(stack.gateway_url, ClientPolicy.load(policy_path), http=http)

        def run_attested() -> Run:
            return _timed(
                attested.stream(PROMPT, max_tokens=max_tokens, temperature=0.0, seed=0),
                lambda c: c.text,
                usage_tokens,
            )

        runners["full stack, attested protocol"] = run_attested
    return runners


def bench_overhead(
    stack: LocalStack, model_path: str, *, threads: int, ctx: int, max_tokens: int = 64, repeats: int = 5
) -> OverheadResult:
    direct = direct_runner(model_path, threads=threads, ctx=ctx, max_tokens=max_tokens)
    runners = stack_runners(stack, max_tokens=max_tokens)
    cold = None
    for name, run in runners.items():  # warm-up: model pages, KMS data key, attestation verification
        first = run()
        if name.endswith("kms protocol"):
            cold = first.seconds
    direct()
    result = OverheadResult(
        max_tokens=max_tokens,
        threads=threads,
        direct=PathResult("direct llama.cpp (in process)"),
        paths=[PathResult(name) for name in runners],
        cold_first_request_seconds=cold,
    )
    for _ in range(max(1, repeats)):
        result.direct.runs.append(direct())
        for path, run in zip(result.paths, runners.values(), strict=True):
            path.runs.append(run())
    return result
