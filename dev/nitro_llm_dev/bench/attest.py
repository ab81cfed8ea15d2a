"""How long verifying one real attestation document takes, with every check.

Two numbers, because a verifier sees two situations: **cold**, the first document of an enclave (the
CA bundle goes through full path validation), and **warm**, every later document from the same
enclave (its CA bundle was verified before, only the new leaf is). Each is reported as wall-clock time
and as this thread's CPU time: on a shared machine wall time includes waiting for other processes.
The best batch median (like ``timeit``'s minimum of repeats) filters out bursts of interference.
"""

from __future__ import annotations

import datetime as dt
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.attestation import VerificationPolicy, parse_document, verify_document
from nitro_llm.attestation.checks import verified_bundles


@dataclass(frozen=True)
class Timing:
    runs: int
    wall_median_ms: float
    wall_p99_ms: float
    cpu_median_ms: float
    cpu_p99_ms: float
    best_batch_cpu_median_ms: float

    def summary(self) -> str:
        return (
            f"median {self.wall_median_ms:.2f} ms wall / {self.cpu_median_ms:.2f} ms CPU, "
            f"p99 {self.wall_p99_ms:.2f} ms wall / {self.cpu_p99_ms:.2f} ms CPU, "
            f"best batch median {self.best_batch_cpu_median_ms:.2f} ms CPU ({self.runs} runs)"
        )


@dataclass(frozen=True)
class BenchResult:
    cold: Timing
    warm: Timing

    def summary(self) -> str:
        return f"verify, cold: {self.cold.summary()}\nverify, warm: {self.warm.summary()}"


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def _measure(
    data: bytes, policy: VerificationPolicy, at: dt.datetime, *, runs: int, cold: bool, batches: int
) -> Timing:
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(max(1, runs)):
        if cold:
            verified_bundles.clear()
        w0, c0 = time.perf_counter(), time.thread_time()
        verify_document(data, at=at, policy=policy)
        c1, w1 = time.thread_time(), time.perf_counter()
        wall.append((w1 - w0) * 1000)
        cpu.append((c1 - c0) * 1000)
    size = max(1, len(cpu) // max(1, batches))
    best = min(statistics.median(cpu[i : i + size]) for i in range(0, len(cpu), size))
    return Timing(len(wall), statistics.median(wall), _p99(wall), statistics.median(cpu), _p99(cpu), best)


def bench_verify(
    document: bytes | Path, *, runs: int = 300, warmup: int = 10, batches: int = 5
) -> BenchResult:
    """Verify ``document`` at its own timestamp, expecting its own PCR0-2 and nonce, ``runs`` times each."""
    data = document.read_bytes() if isinstance(document, Path) else document
    parsed = parse_document(data)
    policy = VerificationPolicy(
        expected_pcrs={i: parsed.pcrs[i] for i in (0, 1, 2)}, nonce=parsed.nonce, allow_debug=parsed.is_debug
    )
    at = parsed.issued_at
    for _ in range(max(0, warmup)):
        verify_document(data, at=at, policy=policy)
    cold = _measure(data, policy, at, runs=runs, cold=True, batches=batches)
    verify_document(data, at=at, policy=policy)
    warm = _measure(data, policy, at, runs=runs, cold=False, batches=batches)
    return BenchResult(cold=cold, warm=warm)
