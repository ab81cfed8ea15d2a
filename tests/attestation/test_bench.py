"""Benchmark: verifying one real document with every check takes under 5 ms here."""

from __future__ import annotations

from vectors import vectors_dir

from nitro_llm_dev.bench.attest import bench_verify


def test_verifying_a_real_document_takes_under_5_ms():
    result = bench_verify(vectors_dir() / "nitro-attestation" / "veracruz-production.cbor", runs=150)
    print("\n" + result.summary())
    assert result.cold.runs == result.warm.runs == 150
    # CPU time is the verifier's own cost; on this shared 2-core machine other test runs inflate even
    # that, so the bound applies to the best of 5 batch medians (timeit's "minimum of repeats").
    assert result.cold.best_batch_cpu_median_ms < 5.0, result.summary()
    assert result.warm.best_batch_cpu_median_ms < result.cold.best_batch_cpu_median_ms, result.summary()
