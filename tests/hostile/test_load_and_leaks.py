"""A bounded loopback load, well-formed and hostile clients together, then the leak scan.

The 60-second version is `nitro-llm bench hostile`; this one is 15 s so the suite stays quick.
"""

from __future__ import annotations

import pytest

from nitro_llm_dev.bench.hostile import RSS_CEILING, RSS_GROWTH_LIMIT, leak_scan
from nitro_llm_dev.bench.leaks import new_canary, scan
from nitro_llm_dev.bench.load import run_load
from nitro_llm_dev.bench.procstat import RssSampler

pytestmark = pytest.mark.slow

LOAD_SECONDS = 15
HOSTILE_KINDS = {
    "garbage",
    "unauthenticated",
    "over_rate",
    "oversize",
    "slowloris",
    "replay",
    "bit_flip",
    "restamped_header",
    "stale",
    "health_flood",
}


@pytest.fixture(scope="module")
def load(hostile_stack):
    pids = hostile_stack.pid_getters()
    with RssSampler(pids) as rss:
        result = run_load(hostile_stack, seconds=LOAD_SECONDS, well_formed=6, seed=3)
    return result, rss.series


def test_well_formed_requests_all_succeed_under_attack(load):
    result, _ = load
    assert result.well_formed_errors == []
    # the property is "no errors"; this only proves the clients really ran (on a busy 2-core box)
    assert result.well_formed_ok >= 2 * LOAD_SECONDS


def test_every_hostile_request_is_refused_with_a_typed_answer(load):
    result, _ = load
    assert result.untyped == []
    assert result.answered_hostile == 0
    kinds = {key.split(":", 1)[0] for key in result.hostile}
    assert kinds >= HOSTILE_KINDS, f"hostile clients that never got through: {HOSTILE_KINDS - kinds}"
    outcomes = {key.split(":", 1)[1] for key in result.hostile}
    assert {"unauthorized", "rate_limited", "replayed_request", "stale_request", "bad_envelope"} <= outcomes
    assert {"413", "decrypt_failed"} <= outcomes
    assert result.slowloris_closed > 0 and result.slowloris_max_seconds < 10


def test_memory_of_every_process_is_bounded(load):
    _, series = load
    assert set(series) == set(RSS_CEILING)
    for name, s in series.items():
        assert len(s.samples) >= LOAD_SECONDS, name
        assert s.peak < RSS_CEILING[name], f"{name} peaked at {s.peak >> 20} MB"
        assert s.growth() < RSS_GROWTH_LIMIT, f"{name} grew {s.growth() >> 20} MB under steady load"


def test_canaries_never_reach_the_gateways(load, hostile_stack):
    result, _ = load
    assert len(result.canaries) == result.well_formed_ok
    reports = leak_scan(hostile_stack, result.canaries, hostile_stack.started_at)
    for where, report in reports.items():
        assert report.hits == [], where
        if where.endswith("memory"):
            assert report.witness_found and report.memory_bytes_scanned > 10 << 20, where
    files = reports["files written during the run"]
    assert files.files_scanned >= 3  # the gateways' and the enclave's logs at least
    environ = open(f"/proc/{hostile_stack.stack.gateway.pid}/environ", "rb").read().split(b"\0")
    assert f"TMPDIR={hostile_stack.gateway_tmp}".encode() in environ  # its temp files are in the scan


def test_the_scan_finds_a_planted_canary(hostile_stack, tmp_path):
    """Without this, a scan that silently looks nowhere would pass the test above."""
    canary = new_canary()
    planted = tmp_path / "written.log"
    planted.write_text(f"request 42 said {canary[:25]}...\n")
    assert scan([canary], files=[planted]).hits == [str(planted)]
    assert scan([new_canary()], files=[planted]).hits == []


def test_the_memory_scan_finds_a_canary_a_process_holds(tmp_path):
    import subprocess
    import sys

    canary = new_canary()
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; held = sys.stdin.readline(); print('ready', flush=True); sys.stdin.read()",
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        holder.stdin.write(canary + "\n")
        holder.stdin.flush()
        assert holder.stdout.readline().strip() == "ready"
        report = scan([canary], pid=holder.pid, witness=b"ready")
        assert report.hits and report.witness_found
    finally:
        holder.kill()
        holder.wait()
