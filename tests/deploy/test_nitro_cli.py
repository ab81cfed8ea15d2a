"""docker import / nitro-cli command lines, and the 4x-EIF memory rule."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from nitro_llm.deploy import nitro_cli
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError, DeployError, EnclaveMemoryTooSmall
from nitro_llm.image.manifest import read_manifest

MIB = 1024 * 1024
# The part of an image manifest ('nitro-llm image build') that deploy reads.
MANIFEST = {
    "format": 1,
    "entrypoint": {
        "entry": "nitro_llm.enclave.main",
        "cmd": ["/usr/bin/python3.11", "-m", "nitro_llm.enclave.main"],
        "env": {"PYTHONUNBUFFERED": "1", "PATH": "/usr/bin:/bin"},
    },
    "outputs": {
        "pcr2": "2" * 96,
        "rootfs_tar": {"file": "rootfs.tar", "size": 3, "sha256": "a" * 64},
        "ramdisk": {"file": "application.cpio", "size": 3, "sha256": "b" * 64},
    },
}


def cfg(tmp_path: Path, **sections: dict) -> DeployConfig:
    return DeployConfig.from_mapping({"region": "eu-west-1", **sections}, tmp_path)


def test_docker_import_loads_the_image_build_with_its_cmd_and_env(tmp_path):
    image_dir = tmp_path / "img"
    image_dir.mkdir()
    (image_dir / "manifest.json").write_text(json.dumps(MANIFEST))
    c = cfg(tmp_path, build={"image_dir": "img"})
    manifest_path, rootfs_tar = nitro_cli.image_paths(c)
    assert (manifest_path, rootfs_tar) == (image_dir / "manifest.json", image_dir / "rootfs.tar")
    argv = nitro_cli.docker_import_argv(c, read_manifest(manifest_path), rootfs_tar)
    assert argv[:2] == ["docker", "import"]
    assert argv[-2:] == [str(rootfs_tar), "nitro-llm-enclave:latest"]  # the tag build-enclave uses
    changes = [argv[i + 1] for i, a in enumerate(argv) if a == "--change"]
    assert changes == [
        'CMD ["/usr/bin/python3.11", "-m", "nitro_llm.enclave.main"]',
        "ENV PATH=/usr/bin:/bin",
        "ENV PYTHONUNBUFFERED=1",
    ]


def test_a_missing_image_build_says_what_to_run(tmp_path):
    with pytest.raises(DeployError) as info:
        nitro_cli.image_paths(cfg(tmp_path))
    assert "nitro-llm image build" in info.value.hint


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
