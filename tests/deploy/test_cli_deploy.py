"""`nitro-llm deploy ...` end to end through its thin execution seam.

docker and nitro-cli cannot run here (no daemon, no Nitro hardware), so small stand-in executables
on PATH play them: they record the argv they were given and answer in nitro-cli's output format.
What is under test is our side: the commands issued, their order, the checks before them, and
the parsing and saving of what comes back.
"""

from __future__ import annotations

import hashlib
import json
import shlex
import shutil
import stat
from pathlib import Path

import image_standin
import pytest
import typer
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli

FAKE_NITRO_CLI = r"""#!/usr/bin/env bash
set -euo pipefail
printf '%s\n' "$*" >> "$FAKE_LOG"
case "$1" in
  build-enclave)
    out=""; prev=""
    for a in "$@"; do [ "$prev" = "--output-file" ] && out="$a"; prev="$a"; done
    truncate -s "${FAKE_EIF_BYTES:-1048576}" "$out"
    echo "Start building the Enclave Image..." >&2
    cat "$FAKE_MEASUREMENTS"
    ;;
  run-enclave)
    echo '{"EnclaveName": "nitro-llm", "EnclaveID": "i-0abc-enc0123", "EnclaveCID": 16, "MemoryMiB": 4096}'
    ;;
  terminate-enclave)
    echo '{"EnclaveName": "nitro-llm", "Terminated": true}'
    ;;
  *) echo "unexpected: $*" >&2; exit 64 ;;
esac
"""

FAKE_DOCKER = """#!/usr/bin/env bash
printf 'docker %s\\n' "$*" >> "$FAKE_LOG"
"""


def pcr(label: str) -> str:
    return hashlib.sha384(label.encode()).hexdigest()


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    deploy_cli.register(app)
    return app


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """A bin folder on PATH (stand-ins get added per test) and the log they append to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    log = tmp_path / "tools.log"
    log.touch()
    measurements = tmp_path / "nitro-cli-out.json"
    measurements.write_text(
        json.dumps(
            {
                "Measurements": {
                    "HashAlgorithm": "Sha384 { ... }",
                    **{f"PCR{i}": pcr(str(i)) for i in (0, 1, 2)},
                }
            }
        )
    )
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("FAKE_LOG", str(log))
    monkeypatch.setenv("FAKE_MEASUREMENTS", str(measurements))

    def install(name: str, text: str) -> None:
        path = bin_dir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IXUSR)

    return install, log


ROOTFS = b"stand-in rootfs tarball"
IMAGE_CMD = ["/usr/bin/python3.11", "-P", "-s", "-m", "nitro_llm.enclave.main"]


@pytest.fixture
def image_dir(tmp_path) -> Path:
    """What 'nitro-llm image build' leaves for 'deploy build-eif': rootfs.tar and its manifest."""
    directory = tmp_path / "image"
    directory.mkdir()
    (directory / "rootfs.tar").write_bytes(ROOTFS)
    manifest = {
        "format": 1,
        "entrypoint": {"entry": "nitro_llm.enclave.main", "cmd": IMAGE_CMD, "env": {"PATH": "/usr/bin:/bin"}},
        "outputs": {
            "pcr2": pcr("2"),
            "rootfs_tar": {
                "file": "rootfs.tar",
                "size": len(ROOTFS),
                "sha256": hashlib.sha256(ROOTFS).hexdigest(),
            },
            "ramdisk": {"file": "application.cpio", "size": 1, "sha256": "b" * 64},
        },
    }
    (directory / "manifest.json").write_text(json.dumps(manifest))
    return directory


@pytest.fixture
def config(tmp_path, image_dir) -> Path:
    path = tmp_path / "conf" / "deploy.toml"
    path.parent.mkdir()
    path.write_text(
        'region = "eu-west-1"\n[enclave]\nmemory_mib = 512\neif = "../out/n.eif"\n'
        '[build]\nmeasurements = "../out/measurements.json"\nimage_dir = "../image"\n'
    )
    return path


def invoke(cli: typer.Typer, *args: str):
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def test_build_eif_dry_run_prints_both_commands(cli, config, image_dir):
    result = invoke(cli, "deploy", "build-eif", "--config", str(config), "--dry-run")
    assert result.exit_code == 0
    lines = result.stdout.strip().splitlines()
    first = shlex.split(lines[0])
    assert first[:2] == ["docker", "import"]
    assert first[-2:] == [str(image_dir / "rootfs.tar"), "nitro-llm-enclave:latest"]
    assert "CMD " + json.dumps(IMAGE_CMD) in first
    assert lines[1].startswith("nitro-cli build-enclave --docker-uri nitro-llm-enclave:latest")


def test_build_eif_without_an_image_build_says_what_to_run(cli, config, image_dir):
    (image_dir / "manifest.json").unlink()
    result = invoke(cli, "deploy", "build-eif", "--config", str(config), "--dry-run")
    assert result.exit_code == 2 and "nitro-llm image build" in result.output


def test_build_eif_refuses_a_rootfs_tar_the_manifest_does_not_list(cli, config, tools, image_dir):
    install, log = tools
    install("docker", FAKE_DOCKER)
    install("nitro-cli", FAKE_NITRO_CLI)
    (image_dir / "rootfs.tar").write_bytes(ROOTFS + b"!")
    result = invoke(cli, "deploy", "build-eif", "--config", str(config))
    assert result.exit_code == 2 and "rootfs.tar" in result.output
    assert log.read_text() == ""  # nothing was imported


def test_build_eif_without_nitro_cli_says_what_to_install_before_building(cli, config, tools):
    install, log = tools
    install("docker", FAKE_DOCKER)
    result = invoke(cli, "deploy", "build-eif", "--config", str(config))
    assert result.exit_code == 2
    assert "nitro-cli" in result.output and "aws-nitro-enclaves-cli" in result.output
    assert log.read_text() == ""  # no docker import was started


def test_build_eif_without_docker(cli, config, tools):
    result = invoke(cli, "deploy", "build-eif", "--config", str(config))
    assert result.exit_code == 2
    assert "'docker' is not installed" in result.output


def test_build_eif_builds_then_saves_the_measurements(cli, config, tools, tmp_path):
    install, log = tools
    install("docker", FAKE_DOCKER)
    install("nitro-cli", FAKE_NITRO_CLI)
    result = invoke(cli, "deploy", "build-eif", "--config", str(config))
    assert result.exit_code == 0, result.output
    calls = log.read_text().splitlines()
    assert calls[0].startswith("docker import --change CMD ")
    assert calls[0].endswith(f"{tmp_path / 'image' / 'rootfs.tar'} nitro-llm-enclave:latest")
    assert calls[1].startswith("build-enclave --docker-uri nitro-llm-enclave:latest --output-file ")
    saved = json.loads((tmp_path / "out" / "measurements.json").read_text())
    assert saved["Measurements"]["PCR0"] == pcr("0")
    assert f"PCR0: {pcr('0')}" in result.stdout
    assert "memory_mib >= 64" in result.output  # 1 MiB EIF -> floor of 64 MiB
    assert "PCR2 differs" not in result.output  # the stand-in prints the manifest's PCR2


def test_build_eif_says_when_nitro_cli_pcr2_is_not_the_manifests(cli, config, tools, tmp_path, monkeypatch):
    install, _ = tools
    install("docker", FAKE_DOCKER)
    install("nitro-cli", FAKE_NITRO_CLI)
    other = tmp_path / "other.json"
    other.write_text(
        json.dumps(
            {
                "Measurements": {
                    "HashAlgorithm": "Sha384 { ... }",
                    **{f"PCR{i}": pcr(f"x{i}") for i in (0, 1, 2)},
                }
            }
        )
    )
    monkeypatch.setenv("FAKE_MEASUREMENTS", str(other))
    result = invoke(cli, "deploy", "build-eif", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert "PCR2 differs" in result.output and "nitro-llm image build --blobs" in result.output


def test_build_eif_with_bad_nitro_cli_output_fails_clearly(cli, config, tools, tmp_path, monkeypatch):
    install, _ = tools
    install("docker", FAKE_DOCKER)
    install("nitro-cli", FAKE_NITRO_CLI)
    bad = tmp_path / "bad.json"
    bad.write_text('{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": "abc"}}')
    monkeypatch.setenv("FAKE_MEASUREMENTS", str(bad))
    result = invoke(cli, "deploy", "build-eif", "--config", str(config))
    assert result.exit_code == 2
    assert not (tmp_path / "out" / "measurements.json").exists()


def test_run_refuses_too_little_memory_for_the_eif(cli, config, tools, tmp_path):
    install, log = tools
    install("nitro-cli", FAKE_NITRO_CLI)
    eif = tmp_path / "out" / "n.eif"
    eif.parent.mkdir()
    with eif.open("wb") as f:
        f.truncate(200 * 1024 * 1024)  # 200 MiB EIF: needs 800 MiB, config gives 512
    result = invoke(cli, "deploy", "run", "--config", str(config))
    assert result.exit_code == 2
    assert "at least 800 MiB" in result.output
    assert log.read_text() == ""


def test_run_without_an_eif_points_to_install_eif(cli, config, tools):
    install, log = tools
    install("nitro-cli", FAKE_NITRO_CLI)
    result = invoke(cli, "deploy", "run", "--config", str(config))
    assert result.exit_code == 2 and "deploy install-eif" in result.output
    assert log.read_text() == ""


@pytest.fixture
def installed(tmp_path, config) -> tuple[Path, Path]:
    """A real (small) EIF and its manifest where the config runs them from."""
    eif, manifest = image_standin.build(tmp_path / "img", image_standin.write_blobs(tmp_path / "blobs"))
    (tmp_path / "out").mkdir(exist_ok=True)
    (tmp_path / "build").mkdir(exist_ok=True)
    return Path(shutil.copy(eif, tmp_path / "out" / "n.eif")), Path(
        shutil.copy(manifest, tmp_path / "build" / "manifest.json")
    )


def test_run_refuses_an_eif_that_differs_from_its_manifest(cli, config, tools, installed):
    install, log = tools
    install("nitro-cli", FAKE_NITRO_CLI)
    eif, _ = installed
    data = bytearray(eif.read_bytes())
    data[-100] ^= 1  # a byte of the application ramdisk
    eif.write_bytes(bytes(data))
    result = invoke(cli, "deploy", "run", "--config", str(config))
    assert result.exit_code == 2
    assert "does not match" in result.output and "PCR2" in result.output
    assert log.read_text() == ""  # nitro-cli never ran


def test_run_is_production_by_default_and_debug_is_loud(cli, config, tools, installed):
    install, log = tools
    install("nitro-cli", FAKE_NITRO_CLI)
    result = invoke(cli, "deploy", "run", "--config", str(config))
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["EnclaveCID"] == 16
    assert "--debug-mode" not in log.read_text()
    assert "DEBUG MODE" not in result.output
    result = invoke(cli, "deploy", "run", "--config", str(config), "--debug-mode")
    assert result.exit_code == 0
    assert "DEBUG MODE" in result.output and "REFUSE" in result.output
    assert log.read_text().splitlines()[-1].endswith("--debug-mode")


def test_stop_terminates_by_name(cli, config, tools):
    install, log = tools
    install("nitro-cli", FAKE_NITRO_CLI)
    assert invoke(cli, "deploy", "stop", "--config", str(config)).exit_code == 0
    assert log.read_text().strip() == "terminate-enclave --enclave-name nitro-llm"


def test_allocator_and_systemd_write_under_a_root(cli, config, tmp_path):
    root = tmp_path / "root"
    assert invoke(cli, "deploy", "allocator", "--config", str(config), "--root", str(root)).exit_code == 0
    assert "memory_mib: 512" in (root / "etc/nitro_enclaves/allocator.yaml").read_text()
    assert invoke(cli, "deploy", "systemd", "--config", str(config), "--root", str(root)).exit_code == 0
    unit = (root / "etc/systemd/system/nitro-llm-enclave.service").read_text()
    assert f"deploy supervise --config {config.resolve()}" in unit
    allowlist = (root / "etc/nitro_enclaves/nitro-llm-vsock-proxy.yaml").read_text()
    assert "kms.eu-west-1.amazonaws.com" in allowlist


def test_print_writes_nothing(cli, config, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = invoke(
        cli, "deploy", "systemd", "--config", str(config), "--print", "--root", str(tmp_path / "r")
    )
    assert result.exit_code == 0
    assert "# ---- /etc/systemd/system/nitro-llm-gateway.service" in result.stdout
    assert not (tmp_path / "r").exists()


def test_unwritable_root_gives_a_hint(cli, config, tmp_path):
    blocker = tmp_path / "a-file"  # a regular file where a folder must go: fails even for root
    blocker.write_text("")
    result = invoke(cli, "deploy", "allocator", "--config", str(config), "--root", str(blocker))
    assert result.exit_code == 2
    assert "cannot write" in result.output and "--print" in result.output


def test_config_resolution_order(tmp_path, config):
    assert deploy_cli.resolve_config_path(config, {}) == config
    assert deploy_cli.resolve_config_path(None, {"NITRO_LLM_DEPLOY_CONFIG": "/x.toml"}) == Path("/x.toml")


def test_allocator_smaller_than_the_enclave_is_caught(config):
    from nitro_llm.deploy.config import DeployConfig
    from nitro_llm.deploy.errors import DeployConfigError

    cfg = DeployConfig.load(config)
    deploy_cli.check_allocator(cfg, "---\nmemory_mib: 512\ncpu_count: 2\n")
    deploy_cli.check_allocator(cfg, None)
    with pytest.raises(DeployConfigError) as info:
        deploy_cli.check_allocator(cfg, "---\n# x\nmemory_mib: 256 # small\ncpu_count: 2\n")
    assert "memory_mib=256" in info.value.message
