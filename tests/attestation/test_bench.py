"""The attestation benchmark measures what it says; its time limit is a bench target, not a test.

The "under 5 ms" bound lives in ``nitro-llm bench`` (``bench/speed/targets.py``, scenario a), measured
with the rest of the speed figures, because an absolute time in the correctness suite fails on a
busy machine for reasons that are not bugs.
"""

from __future__ import annotations

from vectors import vectors_dir

from nitro_llm_dev.bench.attest import bench_verify
from nitro_llm_dev.bench.speed.targets import check_targets


def test_verify_bench_counts_every_run_of_a_real_document():
    result = bench_verify(vectors_dir() / "nitro-attestation" / "veracruz-production.cbor", runs=20)
    assert result.cold.runs == result.warm.runs == 20
    assert result.cold.best_batch_cpu_median_ms > 0 and result.warm.best_batch_cpu_median_ms > 0
    assert "best batch median" in result.summary()


def _a(cold: float, warm: float) -> dict:
    crypto = {
        "attestation_verify_ms": {"first_document_best_batch": cold, "cached_ca_bundle_best_batch": warm}
    }
    return {"a": {"rows": [{}], "max_tokens": 1, "crypto": crypto}}


def test_the_5_ms_bound_is_a_bench_target():
    [met] = [t for t in check_targets(_a(3.6, 1.6)) if "attestation document" in t["target"]]
    [missed] = [t for t in check_targets(_a(5.2, 1.6)) if "attestation document" in t["target"]]
    [cache_useless] = [t for t in check_targets(_a(3.6, 3.7)) if "attestation document" in t["target"]]
    assert met["met"] is True and missed["met"] is False and cache_useless["met"] is False
