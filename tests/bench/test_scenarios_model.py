"""Scenarios (a) and (d) on a real local stack with the real model, tiny settings (a few tokens).

Sanity and structure only: every path answers the same greedy text, ratios are positive, the
sessions all finish with their tokens counted, and beyond capacity the gateway refuses with 429
and Retry-After instead of queueing.
"""

from __future__ import annotations

import pytest

from nitro_llm.inference.model import default_model_path

pytestmark = [pytest.mark.slow, pytest.mark.model]
pytest.importorskip("llama_cpp")

from nitro_llm_dev.bench.speed.many_users import bench_many_users, raw_batched_tps  # noqa: E402
from nitro_llm_dev.bench.speed.overhead import bench_overhead  # noqa: E402
from nitro_llm_dev.bench.speed.stacks import running_stack, unlimited_token  # noqa: E402


@pytest.fixture(scope="module")
def model_stack(tmp_path_factory):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("NITRO_LLM_HOME", str(tmp_path_factory.mktemp("home")))
        # batch 2 + 1 waiting: (d)'s overload step (capacity + sessions requests) must see refusals
        with running_stack(engine="llama", threads=1, batch_size=2, max_waiting=1) as stack:
            yield stack


def test_overhead_paths_agree(model_stack):
    result = bench_overhead(
        model_stack, str(default_model_path()), threads=1, ctx=8192, max_tokens=6, repeats=1
    )
    rows = result.rows()
    assert rows[0]["path"].startswith("direct") and len(rows) >= 2
    for row in rows:
        assert row["tokens"] == 6
        assert row["same_text_as_direct"] is True  # greedy: the enclave answers exactly what llama.cpp does
        assert row["latency_s"] > 0 and row["latency_ratio"] > 0 and row["tokens_per_s_ratio"] > 0
    assert result.cold_first_request_seconds and result.cold_first_request_seconds > 0


def test_raw_batched_ceiling_counts_every_token():
    total, decode_only, cpu = raw_batched_tps(
        default_model_path(), sequences=2, max_tokens=4, threads=1, ctx=256
    )
    assert total > 0 and decode_only > 0 and cpu > 0


def test_many_users_then_overload(model_stack):
    token = unlimited_token(model_stack)
    result = bench_many_users(
        model_stack, token, default_model_path(), sessions=2, max_tokens=5, threads=1, capacity=3, rounds=1
    )
    summary = result.summary()
    (round_,) = result.rounds
    assert len(round_.many) == 2 and all(s.tokens == 5 for s in round_.many)
    assert round_.one.tokens == 5 and summary["sessions_measured"] == 2
    assert summary["aggregate_tps"] > 0 and summary["aggregate_vs_llama_cpp_batched"] > 0
    assert 0 < summary["slowest_vs_fastest_session"] <= 1
    overload = summary["overload"]
    assert overload["requests"] == 5 and sum(overload["statuses"].values()) == 5
    assert overload["refused"] >= 1  # 5 at once for 2 slots + 1 waiting
    assert overload["refused_with_retry_after"] == overload["refused"]
    assert overload["statuses"].get(200, 0) >= 2
