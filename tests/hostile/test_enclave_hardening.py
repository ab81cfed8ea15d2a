"""The enclave process's hardening, observed from outside and from inside a fresh process."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from nitro_llm.enclave.data_keys import DataKeyCache
from nitro_llm.enclave.hardening import may_lock_without_limit

PROBE = """
import ctypes, json, resource
from nitro_llm.enclave.hardening import harden_process, PR_GET_DUMPABLE
before = ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
report = harden_process()
after = ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
locked = next(l for l in open("/proc/self/status") if l.startswith("VmLck:")).split()[1]
print(json.dumps({"before": before, "after": after, "core": resource.getrlimit(resource.RLIMIT_CORE),
                  "vmlck_kb": int(locked), "report": report.to_dict()}))
"""


@pytest.fixture(scope="module")
def probe() -> dict:
    out = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, timeout=60, check=True
    )
    return json.loads(out.stdout)


def test_fresh_process_becomes_undumpable_without_core_dumps(probe):
    assert probe["before"] == 1, "the probe must start dumpable, or the test proves nothing"
    assert probe["after"] == 0
    assert probe["report"]["dumpable"] == "no"
    assert probe["core"] == [0, 0] and probe["report"]["core_dumps"] == "off"


def test_memory_is_locked_where_the_os_allows(probe):
    if not may_lock_without_limit():
        assert probe["report"]["memory_lock"].startswith("none: RLIMIT_MEMLOCK")
        pytest.skip("no CAP_IPC_LOCK and a finite RLIMIT_MEMLOCK: the lock is (rightly) skipped")
    assert probe["report"]["memory_lock"] == "all (onfault)"
    assert probe["vmlck_kb"] > 0


def test_the_running_enclave_is_hardened(hostile_stack):
    pid = hostile_stack.stack.enclave_proc.pid
    limits = open(f"/proc/{pid}/limits").read()
    core = next(line for line in limits.splitlines() if line.startswith("Max core file size")).split()
    assert core[4:6] == ["0", "0"], core
    status = open(f"/proc/{pid}/status").read()
    locked_kb = int(status.split("VmLck:")[1].split()[0])
    report = hostile_stack.enclave_stats()["hardening"]
    assert report["core_dumps"] == "off" and report["dumpable"] == "no"
    if may_lock_without_limit():
        assert report["memory_lock"] == "all (onfault)" and locked_kb > 0
    # the gateway is not an enclave: it must stay an ordinary process (so the leak scan can read it)
    gateway = open(f"/proc/{hostile_stack.stack.gateway.pid}/status").read()
    assert int(gateway.split("VmLck:")[1].split()[0]) == 0


def test_released_data_keys_are_zeroed_when_they_leave_the_cache():
    now = [0.0]
    cache = DataKeyCache(capacity=2, ttl_seconds=10, clock=lambda: now[0])
    cache.put(b"edk-a", "a" * 32, b"\x11" * 32)
    held = next(iter(cache._entries.values()))[1]  # the cache's own copy of the key
    cache.put(b"edk-b", "b" * 32, b"\x22" * 32)
    cache.put(b"edk-c", "c" * 32, b"\x33" * 32)  # evicts a (least recently used)
    assert held == bytearray(32)
    expiring = next(iter(cache._entries.values()))[1]
    now[0] += 11
    assert cache.get(b"edk-b", "b" * 32) is None and expiring == bytearray(32)  # expired: zeroed
    last = next(iter(cache._entries.values()))[1]
    cache.clear()
    assert last == bytearray(32)
