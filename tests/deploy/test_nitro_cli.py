"""docker / nitro-cli command lines, and the 4x-EIF memory rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from nitro_llm.deploy import nitro_cli
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError, EnclaveMemoryTooSmall

MIB = 1024 * 1024


def cfg(tmp_path: Path, **sections: dict) -> DeployConfig:
    return DeployConfig.from_mapping({"region": "eu-west-1", **sections}, tmp_path)


def test_docker_build_bakes_the_measured_settings(tmp_path):
    argv = nitro_cli.docker_build_argv(cfg(tmp_path, enclave={"port": 5005, "cpu_count": 4}))
    assert argv[:2] == ["docker", "build"]
    assert argv[argv.index("--file") + 1] == str((tmp_path / "enclave/Dockerfile").resolve())
    assert argv[argv.index("--tag") + 1] == "nitro-llm-enclave:latest"
    build_args = [argv[i + 1] for i, a in enumerate(argv) if a == "--build-arg"]
    assert build_args == [
        "NITRO_LLM_REGION=eu-west-1",
        "NITRO_LLM_ENCLAVE_PORT=5005",
        "NITRO_LLM_KMS_PROXY_PORT=8000",
        "NITRO_LLM_THREADS=4",
        "NITRO_LLM_CTX=2048",
    ]
    assert argv[-1] == str(tmp_path.parent.resolve())  # context ".." from the config's folder


def test_build_enclave_unsigned_and_signed(tmp_path):
    argv = nitro_cli.build_enclave_argv(cfg(tmp_path))
    assert argv == [
        "nitro-cli",
        "build-enclave",
        "--docker-uri",
        "nitro-llm-enclave:latest",
        "--output-file",
        str((tmp_path / "../build/nitro-llm.eif").resolve()),
    ]
    signed = nitro_cli.build_enclave_argv(
        cfg(tmp_path, build={"signing_certificate": "c.pem", "signing_key": "k.pem"})
    )
    assert signed[-4:] == [
        "--signing-certificate",
        str(tmp_path / "c.pem"),
        "--private-key",
        str(tmp_path / "k.pem"),
    ]
    with pytest.raises(DeployConfigError):
        nitro_cli.build_enclave_argv(cfg(tmp_path, build={"signing_certificate": "c.pem"}))


def test_run_enclave_is_production_unless_asked(tmp_path):
    c = cfg(tmp_path, enclave={"cpu_count": 4, "memory_mib": 6144, "cid": 21})
    argv = nitro_cli.run_enclave_argv(c)
    assert "--debug-mode" not in argv and "--attach-console" not in argv
    assert argv[argv.index("--cpu-count") + 1] == "4"
    assert argv[argv.index("--memory") + 1] == "6144"
    assert argv[argv.index("--enclave-cid") + 1] == "21"
    assert argv[argv.index("--enclave-name") + 1] == "nitro-llm"
    assert nitro_cli.run_enclave_argv(c, debug_mode=True)[-1] == "--debug-mode"
    assert "PCR" in nitro_cli.DEBUG_MODE_WARNING and "REFUSE" in nitro_cli.DEBUG_MODE_WARNING


@pytest.mark.parametrize(
    ("eif_mib", "memory", "ok"),
    [(500, 2000, True), (500, 1999, False), (500.5, 2002, True), (500.5, 2001, False), (1, 64, True)],
)
def test_memory_must_be_four_times_the_eif(eif_mib, memory, ok):
    eif_bytes = int(eif_mib * MIB)
    if ok:
        nitro_cli.check_enclave_memory(memory, eif_bytes)
    else:
        with pytest.raises(EnclaveMemoryTooSmall) as info:
            nitro_cli.check_enclave_memory(memory, eif_bytes)
        assert str(nitro_cli.required_memory_mib(eif_bytes)) in info.value.hint
