import hashlib
import json

import pytest
import typer
from typer.testing import CliRunner

from nitro_llm.cli import model as model_cli

app = typer.Typer()
model_cli.register(app)
app.command("noop")(lambda: None)  # typer needs two commands to keep the "model" group name
runner = CliRunner()


def test_check_custom_file_ok_and_mismatch(tmp_path):
    path = tmp_path / "m.gguf"
    weights = b"GGUF\x03\x00\x00\x00weights"  # a GGUF header: 'model check' refuses other files
    path.write_bytes(weights)
    digest = hashlib.sha256(weights).hexdigest()
    ok = runner.invoke(app, ["model", "check", "--model", str(path), "--sha256", digest])
    assert ok.exit_code == 0 and digest in ok.output
    bad = runner.invoke(app, ["model", "check", "--model", str(path), "--sha256", "ab" * 32])
    assert bad.exit_code == 1 and "model_digest_mismatch" in bad.output


def test_check_missing_file(tmp_path):
    result = runner.invoke(app, ["model", "check", "--model", str(tmp_path / "none.gguf")])
    assert result.exit_code == 1 and "model_missing" in result.output


@pytest.mark.model
def test_check_and_info_default_model():
    result = runner.invoke(app, ["model", "check"])
    assert result.exit_code == 0 and "digest matches" in result.output
    info = json.loads(runner.invoke(app, ["model", "info"]).output)
    assert info["exists"] and info["size"] > 50_000_000


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (b"just some notes, not a model\n", "not a GGUF model"),
        (b"", "not a GGUF model"),
        (b"GGUF\x01\x00\x00\x00", "GGUF version 1"),
    ],
)
def test_check_refuses_a_file_that_is_not_gguf(tmp_path, content, says):
    path = tmp_path / "some.txt"
    path.write_bytes(content)
    result = runner.invoke(app, ["model", "check", "--model", str(path)])
    assert result.exit_code == 1, result.output
    assert "model_not_gguf" in result.output and says in result.output
    assert "status  ok" not in result.output
