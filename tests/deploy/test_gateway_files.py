"""'nitro-llm deploy gateway-files --tls-only': the TLS pair is made, the tokens file is left to whoever
provides it (on Kubernetes, a Secret every replica mounts read-only) and never created or touched."""

from __future__ import annotations

import json
import pwd
import stat
from pathlib import Path

import typer
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm.gateway.auth import FORMAT


def _config(tmp_path: Path) -> Path:
    user = pwd.getpwuid(Path(tmp_path).stat().st_uid).pw_name  # whoever runs the tests owns tmp_path
    config = tmp_path / "deploy.toml"
    config.write_text(
        'region = "eu-west-1"\n[gateway]\n'
        f'user = "{user}"\n'
        f'api_tokens_file = "{tmp_path}/tokens/api-tokens.json"\n'
        f'tls_cert = "{tmp_path}/run/gateway/tls.crt"\n'
        f'tls_key = "{tmp_path}/run/gateway/tls.key"\n'
    )
    return config


def _gateway_files(config: Path, *extra: str):
    app = typer.Typer()
    deploy_cli.register(app)
    return CliRunner().invoke(app, ["deploy", "gateway-files", "--config", str(config), *extra])


def test_tls_only_makes_the_pair_and_leaves_a_provided_tokens_file_alone(tmp_path):
    config = _config(tmp_path)
    tokens = tmp_path / "tokens" / "api-tokens.json"
    tokens.parent.mkdir()
    tokens.write_text(json.dumps({"format": FORMAT, "clients": {}}))
    tokens.chmod(0o440)  # as a Secret volume presents it: group-readable, read-only
    result = _gateway_files(config, "--tls-only")
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o440 and "api-tokens" not in result.stdout
    key, cert = tmp_path / "run/gateway/tls.key", tmp_path / "run/gateway/tls.crt"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and stat.S_IMODE(cert.stat().st_mode) == 0o644
    assert stat.S_IMODE(key.parent.stat().st_mode) == 0o700
    # Without --tls-only the same command takes the tokens file as its own and puts its mode right.
    result = _gateway_files(config)
    assert result.exit_code == 0, result.output
    assert stat.S_IMODE(tokens.stat().st_mode) == 0o600


def test_tls_only_never_creates_a_tokens_file(tmp_path):
    result = _gateway_files(_config(tmp_path), "--tls-only")
    assert result.exit_code == 0, result.output
    assert not (tmp_path / "tokens").exists()
    assert (tmp_path / "run/gateway/tls.crt").is_file()
