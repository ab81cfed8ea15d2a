"""The enclave's thread count: "auto" (0) sized from the CPUs by the measured rule, an explicit count
kept as given, and "auto" (not the count it resolves to) measured into the PCRs."""

from __future__ import annotations

import os

import pytest

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.threads import auto_threads, inference_threads


@pytest.mark.parametrize(("cpus", "threads"), [(1, 1), (2, 1), (4, 3), (16, 15)])
def test_auto_leaves_one_cpu_free(cpus, threads):
    assert auto_threads(cpus) == threads


def test_explicit_count_overrides_the_rule():
    assert inference_threads(0, cpus=2) == 1
    assert inference_threads(2, cpus=2) == 2
    assert EnclaveConfig(threads=3).inference_threads(cpus=8) == 3
    with pytest.raises(ValueError):
        EnclaveConfig(threads=-1)


def test_auto_is_the_default_and_is_measured_as_auto():
    config = EnclaveConfig()
    assert config.threads == 0 and config.measured()["threads"] == 0
    assert config.inference_threads() == auto_threads(len(os.sched_getaffinity(0)))
