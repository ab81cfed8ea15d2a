"""The deployment config: one file, strictly validated, paths relative to the file."""

from __future__ import annotations

from pathlib import Path

import pytest

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "deploy" / "nitro-llm.toml"
FLEET_ARN = "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "deploy.toml"
    path.write_text(text)
    return path


def test_shipped_example_loads_and_points_into_the_repo():
    cfg = DeployConfig.load(EXAMPLE)
    assert cfg.region == "us-east-1"
    assert cfg.path(cfg.build.image_dir) == REPO / "build" / "image"  # 'nitro-llm image build build/image'
    assert cfg.path(cfg.enclave.eif) == REPO / "build" / "nitro-llm.eif"
    assert cfg.kms_host == "kms.us-east-1.amazonaws.com"


def test_paths_are_relative_to_the_file_not_the_cwd(tmp_path, monkeypatch):
    path = write(tmp_path, 'region = "eu-west-1"\n[enclave]\neif = "out/x.eif"\n')
    monkeypatch.chdir("/")
    cfg = DeployConfig.load(path)
    assert cfg.path(cfg.enclave.eif) == tmp_path / "out" / "x.eif"
    assert cfg.path(Path("/abs/y.eif")) == Path("/abs/y.eif")


def test_the_dockerfile_keys_are_refused_with_the_new_way(tmp_path):
    path = write(
        tmp_path, 'region = "eu-west-1"\n[build]\ndockerfile = "enclave/Dockerfile"\ncontext = ".."\n'
    )
    with pytest.raises(DeployConfigError) as info:
        DeployConfig.load(path)
    assert "build" in info.value.message and "nitro-llm image build" in info.value.message


def test_typo_in_a_key_is_refused(tmp_path):
    path = write(tmp_path, 'region = "eu-west-1"\n[enclave]\nmemroy_mib = 8192\n')
    with pytest.raises(DeployConfigError) as info:
        DeployConfig.load(path)
    assert "enclave.memroy_mib" in info.value.message


@pytest.mark.parametrize(
    ("text", "where"),
    [
        ('region = "Ireland"\n', "region"),
        ('region = "eu-west-1"\n[enclave]\ncid = 3\n', "enclave.cid"),
        ('region = "eu-west-1"\n[enclave]\ncpu_count = 1\n', "enclave.cpu_count"),
        ('region = "eu-west-1"\n[gateway]\nport = 70000\n', "gateway.port"),
        ("[enclave]\ncpu_count = 2\n", "region"),
        ('region = "eu-west-1"\n[fleet]\nkms_key_arn = "alias/fleet"\n', "fleet.kms_key_arn"),
        (f'region = "eu-west-1"\n[fleet]\nkms_key_arn = "{FLEET_ARN}"\nsource = "/tmp/x"\n', "fleet.source"),
        ('region = "eu-west-1"\n[fleet]\nkey_file = "/etc/x.json"\n', "fleet.kms_key_arn"),  # required
    ],
)
def test_invalid_values_name_the_key(tmp_path, text, where):
    with pytest.raises(DeployConfigError) as info:
        DeployConfig.load(write(tmp_path, text))
    assert where in info.value.message


def test_missing_file_and_bad_toml(tmp_path):
    with pytest.raises(DeployConfigError) as info:
        DeployConfig.load(tmp_path / "nope.toml")
    assert "--config" in info.value.hint
    with pytest.raises(DeployConfigError):
        DeployConfig.load(write(tmp_path, "region = \n"))


def test_region_override_and_china_partition(tmp_path):
    cfg = DeployConfig.load(write(tmp_path, 'region = "eu-west-1"\n'), region="cn-north-1")
    assert cfg.kms_host == "kms.cn-north-1.amazonaws.com.cn"
    assert cfg.inference_threads == cfg.enclave.cpu_count == 2


def test_the_fleet_kms_key_must_be_in_the_enclaves_region(tmp_path):
    """The enclave reaches only its region's KMS (vsock-proxy's one allowlist entry)."""
    text = f'region = "us-east-1"\n[fleet]\nkms_key_arn = "{FLEET_ARN}"\n'
    with pytest.raises(
        DeployConfigError, match="in eu-west-1, but the enclave reaches only KMS in us-east-1"
    ):
        DeployConfig.load(write(tmp_path, text))
    cfg = DeployConfig.load(write(tmp_path, text.replace("us-east-1", "eu-west-1")))
    assert cfg.fleet is not None and cfg.fleet.key_file == Path("/etc/nitro-llm/fleet-key.json")
