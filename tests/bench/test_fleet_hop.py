"""Scenario (h), the balancer hop, on a real two-replica fleet with tiny settings: structure and
sanity (every answer verified through both paths, ratios positive), never speed."""

from __future__ import annotations

import pytest

from nitro_llm_dev.bench.speed.fleet_hop import bench_fleet_hop
from nitro_llm_dev.bench.speed.report import render

pytestmark = pytest.mark.slow


def test_the_hop_is_measured_against_direct_with_every_answer_checked(tmp_path_factory, monkeypatch):
    monkeypatch.setenv("NITRO_LLM_HOME", str(tmp_path_factory.mktemp("h")))  # short: Unix socket paths
    (row,) = bench_fleet_hop(replicas=(2,), concurrency=4, seconds=0.3)
    assert (row["replicas"], row["concurrency"], row["failed"]) == (2, 4, 0)
    assert row["requests"] > 20
    assert row["direct_requests_per_s"] > 0 and row["balancer_requests_per_s"] > 0
    assert row["p50_ratio"] > 0 and row["throughput_ratio"] > 0
    assert "## (h) Load balancer hop" in render({"h": [row], "scenario_dates": {"h": "now"}}, [])
