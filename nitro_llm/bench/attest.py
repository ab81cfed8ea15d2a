"""How long verifying one real attestation document takes (full check list, no caching anywhere).

Reported both as wall-clock time and as this thread's CPU time: on a shared machine the wall time
includes waiting for other processes, while CPU time is the work verification itself costs.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.attestation import VerificationPolicy, parse_document, verify_document


@dataclass(frozen=True)
class BenchResult:
    runs: int
    wall_median_ms: float
    wall_p99_ms: float
    cpu_median_ms: float
    cpu_p99_ms: float

    def summary(self) -> str:
        return (
            f"verify one document, {self.runs} runs: "
            f"median {self.wall_median_ms:.2f} ms wall ({self.cpu_median_ms:.2f} ms CPU), "
            f"p99 {self.wall_p99_ms:.2f} ms wall ({self.cpu_p99_ms:.2f} ms CPU)"
        )


def _p99(samples: list[float]) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def bench_verify(document: bytes | Path, *, runs: int = 300, warmup: int = 10) -> BenchResult:
    """Verify ``document`` at its own timestamp, expecting its own PCR0-2, ``runs`` times."""
    data = document.read_bytes() if isinstance(document, Path) else document
    parsed = parse_document(data)
    at = parsed.issued_at
    policy = VerificationPolicy(
        expected_pcrs={i: parsed.pcrs[i] for i in (0, 1, 2)}, nonce=parsed.nonce, allow_debug=parsed.is_debug
    )
    for _ in range(max(0, warmup)):
        verify_document(data, at=at, policy=policy)
    wall: list[float] = []
    cpu: list[float] = []
    for _ in range(max(1, runs)):
        w0, c0 = time.perf_counter(), time.thread_time()
        verify_document(data, at=at, policy=policy)
        c1, w1 = time.thread_time(), time.perf_counter()
        wall.append((w1 - w0) * 1000)
        cpu.append((c1 - c0) * 1000)
    return BenchResult(len(wall), statistics.median(wall), _p99(wall), statistics.median(cpu), _p99(cpu))
