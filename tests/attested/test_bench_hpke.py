"""The HPKE micro-benchmark runs, returns sane numbers, and the hybrid costs more than X25519 alone."""

from nitro_llm_dev.bench.hpke import bench_hpke


def test_bench_hpke_reports_both_suites_in_microseconds():
    result = bench_hpke(iterations=20)
    assert set(result) == {"x25519", "mlkem768-x25519"}
    for row in result.values():
        assert row["iterations"] == 20
        assert 0 < row["seal_us"] < 1_000_000 and 0 < row["open_us"] < 1_000_000
        assert row["total_us"] == row["seal_us"] + row["open_us"]
        assert row["request_bytes"] > 2048  # the 2 KB question, padded and sealed
    # The hybrid's encapsulation (1120 bytes) is on the wire: it is strictly bigger.
    assert result["mlkem768-x25519"]["request_bytes"] > result["x25519"]["request_bytes"] + 1000
