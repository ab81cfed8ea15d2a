"""Each scenario's result is stored under its own letter (a re-lettering once filed the start-up
bench under the peer's letter, and a run of both lost the peer's results). The scenarios that need
no shared stack run here with their measuring functions replaced: no processes, no model."""

from __future__ import annotations

import pytest

from nitro_llm_dev.bench.speed import runner, startup, threads
from nitro_llm_dev.bench.speed.runner import BenchOptions, run_bench


@pytest.fixture
def recorded(monkeypatch):
    monkeypatch.setattr(startup, "bench_startup", lambda **_kw: {"scenario": "start-up"})
    monkeypatch.setattr(threads, "bench_threads", lambda *_a, **_kw: {"scenario": "threads"})
    monkeypatch.setattr(runner, "describe_machine", lambda: {"load_average_1m": 0.0})


def test_start_up_is_j_and_threads_is_g(recorded):
    results = run_bench(BenchOptions(scenarios="gj"))
    assert results["j"] == {"scenario": "start-up"} and results["g"] == {"scenario": "threads"}
    assert "i" not in results and set(results["scenario_seconds"]) == {"g", "j"}


def test_the_default_budget_leaves_out_the_scenarios_the_default_does_not_run():
    from nitro_llm_dev.bench.speed.targets import check_targets

    spent = {"a": 26.8, "b": 24.3, "d": 58.7, "e": 0.2, "f": 107.1, "i": 239.1, "j": 27.0}
    results = {"options": {"scenarios": "abdefij"}, "seconds": 488.3, "scenario_seconds": spent}
    (row,) = [t for t in check_targets(results) if t["target"].startswith("default bench")]
    assert row["met"] is True and row["measured"].startswith("115 s") and "f, i, j ran too" in row["measured"]
    results["options"]["scenarios"] = "abde"
    (row,) = [t for t in check_targets(results) if t["target"].startswith("default bench")]
    assert row["met"] is False  # the whole 488 s counts when only the default ran
