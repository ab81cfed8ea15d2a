"""A fleet replica's image: 'nitro-llm image build --fleet-kms-key' measures the fleet KMS key's ARN
(other PCRs, recorded in the manifest), and an instance installs and starts only an image measured
with the fleet KMS key its config's [fleet] names (or, without [fleet], one measured with none)."""

from __future__ import annotations

import hashlib
import shutil
from pathlib import Path

import image_standin
import pytest
import typer
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm.cli.main import full_app
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.eif_check import check_installed
from nitro_llm.deploy.errors import EifRejected
from nitro_llm.image.manifest import read_manifest

ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = ARN.replace("1234abcd", "ffffffff")


@pytest.fixture(scope="module")
def images(tmp_path_factory) -> dict[str | None, tuple[Path, Path]]:
    """(EIF, manifest) built without a fleet key and with ARN, by the real 'image build'."""
    root = tmp_path_factory.mktemp("images")
    blobs = image_standin.write_blobs(root / "blobs")
    region = ("--region", "eu-west-1")
    return {
        None: image_standin.build(root / "plain", blobs, *region),
        ARN: image_standin.build(root / "fleet", blobs, *region, "--fleet-kms-key", ARN),
    }


def test_the_fleet_kms_key_is_measured_and_recorded_in_the_manifest(images):
    plain, fleet = read_manifest(images[None][1]), read_manifest(images[ARN][1])
    assert (plain.fleet_kms_key, fleet.fleet_kms_key) == (None, ARN)
    assert plain.pcrs()[0] != fleet.pcrs()[0] and plain.pcrs()[2] != fleet.pcrs()[2]


@pytest.mark.parametrize(
    ("arn", "message"),
    [
        ("alias/nitro-llm-fleet", "key ARN"),  # an alias can be pointed elsewhere after the PCRs pin it
        (ARN.replace("eu-west-1", "us-east-1"), "the enclave reaches only kms.eu-west-1"),
    ],
)
def test_image_build_refuses_a_fleet_kms_key_the_enclave_could_not_use(tmp_path, arn, message):
    result = CliRunner().invoke(
        full_app(), ["image", "build", str(tmp_path / "out"), "--region", "eu-west-1", "--fleet-kms-key", arn]
    )
    assert result.exit_code == 2 and message in result.output, result.output
    assert not (tmp_path / "out").exists()  # refused before building anything


def install(tmp_path: Path, image: tuple[Path, Path], fleet_arn: str | None):
    eif, manifest = (Path(shutil.copy(p, tmp_path / p.name)) for p in image)
    config = tmp_path / "deploy.toml"
    config.write_text(
        'region = "eu-west-1"\n[enclave]\neif = "run/n.eif"\nmanifest = "run/manifest.json"\n'
        + (f'[fleet]\nkms_key_arn = "{fleet_arn}"\n' if fleet_arn else "")
    )
    app = typer.Typer()
    deploy_cli.register(app)
    sha256 = hashlib.sha256(manifest.read_bytes()).hexdigest()
    argv = ["deploy", "install-eif", str(eif), str(manifest), "--manifest-sha256", sha256]
    return CliRunner().invoke(app, [*argv, "--config", str(config)]), config


@pytest.mark.parametrize(
    ("built", "configured", "refusal"),
    [
        (ARN, ARN, None),
        (None, None, None),
        (ARN, None, "config has no [fleet] section"),
        (ARN, OTHER_ARN, f"measured with the fleet KMS key {ARN}, but the config's [fleet] kms_key_arn is"),
        (None, ARN, "measured with the fleet KMS key (none)"),
    ],
    ids=["same-key", "no-fleet", "fleet-image-plain-config", "another-key", "plain-image-fleet-config"],
)
def test_install_eif_takes_only_an_image_of_the_configured_fleet_kms_key(
    tmp_path, images, built, configured, refusal
):
    result, _ = install(tmp_path, images[built], configured)
    if refusal is None:
        assert result.exit_code == 0, result.output
        assert (tmp_path / "run" / "n.eif").is_file()
    else:
        assert result.exit_code == 2 and refusal in result.output, result.output
        assert not (tmp_path / "run").exists()  # nothing installed


def test_every_start_checks_it_again(tmp_path, images):
    """The supervisor's check before each 'nitro-cli run-enclave': a config edited after installation."""
    result, config = install(tmp_path, images[ARN], ARN)
    assert result.exit_code == 0, result.output
    config.write_text(config.read_text().replace(ARN, OTHER_ARN))
    with pytest.raises(EifRejected, match="could never open this fleet's key"):
        check_installed(DeployConfig.load(config))
