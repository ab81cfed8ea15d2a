"""Scenarios (b) and (e) and the report, on a real local stack with the echo engine, tiny settings.

They check structure and sanity — every answer verified, ratios positive, counts right — never
speed: timing targets belong to the benchmark, not to tests.
"""

from __future__ import annotations

import json

import pytest

from nitro_llm_dev.bench.speed.kms_calls import bench_kms_calls
from nitro_llm_dev.bench.speed.protocol_path import bench_protocol
from nitro_llm_dev.bench.speed.report import render, write_report
from nitro_llm_dev.bench.speed.stacks import running_stack, unlimited_token
from nitro_llm_dev.bench.speed.targets import check_targets

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def echo_stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NITRO_LLM_HOME", str(tmp_path_factory.mktemp("home")))
        with running_stack(engine="echo", threads=1, max_waiting=16) as stack:
            yield stack


def test_protocol_path_every_answer_verified(echo_stack):
    token = unlimited_token(echo_stack)
    result = bench_protocol(echo_stack, token, concurrency=(1, 4), seconds=0.4, warmup=0.1, rate_guess=500)
    rows = result.rows()
    assert [r["concurrency"] for r in rows] == [1, 4]
    for row, level in zip(rows, result.ours, strict=True):
        assert row["requests"] > 10 and row["failed"] == 0
        assert level.statuses == {200: level.requests}
        assert 0 < row["p50_ms"] <= row["p99_ms"]
        assert row["requests_per_s"] > 0 and row["bare_requests_per_s"] > 0
        assert row["p50_ratio"] > 0 and row["throughput_ratio"] > 0


def test_ten_turns_one_decrypt(echo_stack):
    result = bench_kms_calls(echo_stack, turns=10)
    assert result["kms_decrypt_calls"] == 1
    assert result["client_kms_calls"] == {"generate_data_key": 1}
    assert result["data_key_cache_hits"] == 9
    assert result["ratio_vs_seed"] == pytest.approx(0.1)


def test_report_has_every_table_and_keeps_older_scenarios(tmp_path, echo_stack):
    token = unlimited_token(echo_stack)
    b = bench_protocol(echo_stack, token, concurrency=(1,), seconds=0.3, warmup=0.1, rate_guess=300).rows()
    first = {"options": {"scenarios": "b"}, "b": b, "finished_at": "day 1", "machine": {"cpu": "x"}}
    write_report(first, tmp_path)
    second = {"options": {"scenarios": "e"}, "e": bench_kms_calls(echo_stack), "finished_at": "day 2"}
    path = write_report(second, tmp_path)
    text = path.read_text()
    assert "## (b) Protocol path" in text and "(day 1)" in text
    assert "## (e) KMS calls" in text and "(day 2)" in text
    stored = json.loads((tmp_path / "docs" / "bench" / "results.json").read_text())
    assert set(stored) >= {"b", "e"}
    targets = {t["target"]: t["met"] for t in check_targets(stored)}
    assert targets["(e) one KMS Decrypt for a 10-turn chat"] is True
    assert "| clients |" in render(stored, [])
