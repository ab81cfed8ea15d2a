"""Per-request cryptography next to scenario (a): what the confidential path adds, in microseconds.

Reuses the project's micro-benchmarks: HPKE seal + open of a 2 KB question per suite
(``nitro_llm_dev.bench.hpke``) and verifying a real AWS-signed attestation document, first time and
with its CA bundle cached (``nitro_llm_dev.bench.attest``; only when the shared test vectors are found).
Against a 64-token answer that takes about a second, these explain why (a)'s ratio sits at 1.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

REAL_DOCUMENT = Path("nitro-attestation") / "veracruz-production.cbor"


def _vectors_dir() -> Path | None:
    override = os.environ.get("NITRO_LLM_TEST_VECTORS")
    candidates = [Path(override)] if override else []
    candidates.append(
        Path(__file__).resolve().parents[4].parent / "shared" / "test-vectors"
    )  # beside the repository
    return next((p for p in candidates if (p / REAL_DOCUMENT).is_file()), None)


def crypto_costs(*, iterations: int = 100) -> dict[str, Any]:
    from nitro_llm_dev.bench.hpke import bench_hpke

    out: dict[str, Any] = {
        "hpke_seal_open_us": {
            suite: round(row["total_us"], 1) for suite, row in bench_hpke(iterations=iterations).items()
        }
    }
    vectors = _vectors_dir()
    if vectors is not None:
        from nitro_llm_dev.bench.attest import bench_verify

        result = bench_verify(vectors / REAL_DOCUMENT, runs=iterations, warmup=5)
        out["attestation_verify_ms"] = {
            "first_document": round(result.cold.cpu_median_ms, 2),
            "cached_ca_bundle": round(result.warm.cpu_median_ms, 2),
            # best of the batch medians: other processes on a shared machine only ever add time
            "first_document_best_batch": round(result.cold.best_batch_cpu_median_ms, 3),
            "cached_ca_bundle_best_batch": round(result.warm.best_batch_cpu_median_ms, 3),
        }
    return out
