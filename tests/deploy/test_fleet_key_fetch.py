"""`nitro-llm deploy fetch-fleet-key`: a fleet instance downloads the published wrapped fleet key file
(with the recording stand-in of the AWS CLI, whose S3 is a folder) and installs it only when it is this
fleet's and not older than the installed one; the gateway's file source then sees the rotation."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
import standins
import typer
from standins.recording import calls
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm.fleet.key_file import FleetKeyFile, FleetKeyGeneration
from nitro_llm.gateway.fleet_keys import FleetKeySource

ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = ARN.replace("1234abcd", "ffffffff")
SOURCE = "s3://nitro-llm-fleet-key-123456789012/fleet-key.json"


@pytest.fixture
def instance(tmp_path, monkeypatch):
    """A config with [fleet], the stand-in 'aws' on PATH, and the operator's upload (into its S3)."""
    state = tmp_path / "state"
    bin_dir = standins.install(state / "bin", ["aws"])
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    monkeypatch.setenv("STANDIN_STATE", str(state))
    monkeypatch.setenv("STANDIN_LOG", str(state / "calls.log"))
    config = tmp_path / "etc" / "deploy.toml"
    config.parent.mkdir()
    fleet = f'kms_key_arn = "{ARN}"\nkey_file = "fleet-key.json"\nsource = "{SOURCE}"\n'
    config.write_text(f'region = "eu-west-1"\n[fleet]\n{fleet}')
    uploaded = state / "s3" / SOURCE.removeprefix("s3://")
    uploaded.parent.mkdir(parents=True)

    def upload(keys: FleetKeyFile) -> None:
        keys.save(uploaded)

    return config, config.parent / "fleet-key.json", upload


def generation(n: int) -> FleetKeyGeneration:
    return FleetKeyGeneration(f"{n:016x}", n, bytes([n]) * 200, "2025-01-01T00:00:00+00:00")


def fetch(config: Path):
    app = typer.Typer()
    deploy_cli.register(app)
    return CliRunner().invoke(app, ["deploy", "fetch-fleet-key", "--config", str(config)])


def test_first_fetch_then_a_rotation_reaches_the_gateway(instance):
    config, key_file, upload = instance
    first = FleetKeyFile(ARN, generation(1))
    upload(first)
    done = fetch(config)
    assert done.exit_code == 0, done.output
    assert "installed: current 0000000000000001 generation 1" in done.stdout
    assert FleetKeyFile.load(key_file) == first
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o644  # ciphertext only; the gateway's user reads it
    source = FleetKeySource(key_file)  # the gateway's view of the file
    assert source.get().ids() == (first.current.id, None)

    before = key_file.stat()
    assert "unchanged" in fetch(config).stdout  # the timer's usual run: nothing rewritten
    assert key_file.stat().st_mtime_ns == before.st_mtime_ns and key_file.stat().st_ino == before.st_ino

    rotated = first.rotated(generation(2))  # the operator's 'fleet-key rotate', uploaded
    upload(rotated)
    done = fetch(config)
    assert done.exit_code == 0 and "previous 0000000000000001 generation 1" in done.stdout
    assert source.get().ids() == (rotated.current.id, first.current.id)  # re-read: the change is seen
    (call,) = {tuple(c["argv"][:6]) for c in calls(config.parent.parent / "state" / "calls.log")}
    assert call == ("s3", "cp", "--only-show-errors", "--region", "eu-west-1", SOURCE)
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["deploy.toml", "fleet-key.json"]


@pytest.mark.parametrize(
    ("published", "reason"),
    [
        (FleetKeyFile(OTHER_ARN, generation(3)), f"not by this fleet's {ARN}"),
        (FleetKeyFile(ARN, generation(1)), "already has generation 2"),  # a stale copy: rollback
        (FleetKeyFile(ARN, FleetKeyGeneration("00000000000000ff", 2, b"x")), "already has generation 2"),
        (None, "is not a fleet key file"),
    ],
    ids=["another-kms-key", "older-generation", "relabelled-generation", "not-a-key-file"],
)
def test_a_wrong_upload_is_refused_and_the_installed_file_kept(instance, published, reason):
    config, key_file, upload = instance
    installed = FleetKeyFile(ARN, generation(2))
    upload(installed)
    assert fetch(config).exit_code == 0
    if published is None:
        (config.parent.parent / "state" / "s3" / SOURCE.removeprefix("s3://")).write_text("<html>oops")
    else:
        upload(published)
    done = fetch(config)
    assert done.exit_code == 2 and reason in done.output, done.output
    assert FleetKeyFile.load(key_file) == installed
    assert sorted(p.name for p in key_file.parent.iterdir()) == ["deploy.toml", "fleet-key.json"]


def test_a_missing_object_fails_without_touching_the_installed_file(instance):
    config, key_file, _ = instance
    done = fetch(config)
    assert done.exit_code == 2 and "'aws s3' failed" in done.output
    assert not key_file.exists() and sorted(p.name for p in key_file.parent.iterdir()) == ["deploy.toml"]
