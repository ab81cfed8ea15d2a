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
