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


def test_conversation_bench_reuses_only_with_a_secret(model_stack):
    from nitro_llm_dev.bench.speed.conversation import MODES, bench_conversation
    from nitro_llm_dev.bench.speed.report import render
    from nitro_llm_dev.bench.speed.targets import check_targets

    f = bench_conversation(model_stack, turns=2, rounds=1, max_tokens=4)
    assert set(f["modes"]) == set(MODES) and all(len(m["ttft_seconds"]) == 2 for m in f["modes"].values())
    assert f["same_answers"] is True
    # uncached: no key; cached and back to back: turn 1 misses, turn 2 hits; turn 2's question alone misses
    assert (f["enclave"]["kv_cache_hits"], f["enclave"]["kv_cache_misses"]) == (2, 3)
    assert f["last_turn_over_its_question_alone"] > 0 and f["last_question_alone_ttft_seconds"] > 0
    # turn 2 prefilled only what it added, by the enclave's own count
    assert 0 < f["cached_prefilled_tokens"][1] < f["prompt_tokens"][1] - f["prompt_tokens"][0]
    assert "## (f)" in render({"f": f}, [])
    targets = [t["target"] for t in check_targets({"f": f})]
    assert any(t.startswith("(f) turn-2") for t in targets) and any(
        t.startswith("(f) what 1 turns") for t in targets
    )


def test_threads_bench_parts(model_stack):
    from nitro_llm_dev.bench.speed.report import render
    from nitro_llm_dev.bench.speed.targets import check_targets
    from nitro_llm_dev.bench.speed.threads import bench_threads_through, run_threads_bench

    through = bench_threads_through({1: model_stack, 2: model_stack}, rounds=1, max_tokens=3)
    assert set(through["first_token_s"]) == {"1", "2"} and through["prefill_ratio"] > 0
    part = run_threads_bench(threads=2, rounds=1, prompt_tokens=8, decode_tokens=2)
    assert part["prefill"]["ratio"] > 0 and part["decode"]["ratio"] > 0
    g = {
        "cpus": 2,
        "threads": 2,
        "auto": 1,
        "in_process": part,
        "in_process_neighbour_busy": part,
        "through_stack": through,
        "faster_through_stack": 1,
    }
    assert "## (g)" in render({"g": g}, [])
    (target,) = [t for t in check_targets({"g": g}) if t["target"].startswith("(g)")]
    assert target["met"] is True
