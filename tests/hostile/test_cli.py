"""The commands: issuing API tokens, and the hostile run that writes SECURITY.md's figures."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from nitro_llm.cli.main import full_app
from nitro_llm.gateway.auth import TokenRegistry
from nitro_llm_dev.bench.hostile import BEGIN, END, ReportError, write_report

app = full_app()

runner = CliRunner()


def test_gateway_token_issues_a_working_token_once(tmp_path):
    path = tmp_path / "tokens.json"
    result = runner.invoke(
        app, ["gateway-token", str(path), "clinic-a", "--rate-limit", "2", "--max-concurrent", "3"]
    )
    assert result.exit_code == 0, result.output
    token = result.output.strip()
    assert token.startswith("nlt_") and token not in path.read_text()
    client = TokenRegistry(path).authenticate(f"Bearer {token}")
    assert client.name == "clinic-a" and client.limits.max_concurrent == 3
    bad = runner.invoke(app, ["gateway-token", str(path), "no spaces allowed"])
    assert bad.exit_code != 0


def test_report_replaces_only_the_figures(tmp_path):
    doc = tmp_path / "SECURITY.md"
    doc.write_text(f"# Security\nintro\n{BEGIN}\nold figures\n{END}\nafter\n")
    write_report(doc, "| new | figures |")
    text = doc.read_text()
    assert "old figures" not in text and "| new | figures |" in text
    assert text.startswith("# Security\nintro\n") and text.endswith(f"{END}\nafter\n")
    doc.write_text("no markers here")
    with pytest.raises(ReportError):
        write_report(doc, "x")


@pytest.mark.slow
def test_hostile_run_writes_figures_a_run_produced(tmp_path):
    doc = tmp_path / "SECURITY.md"
    doc.write_text(f"# Security\n{BEGIN}\n(none yet)\n{END}\n")
    result = runner.invoke(
        app,
        [
            "bench",
            "hostile",
            "--seconds",
            "3",
            "--frames",
            "300",
            "--clients",
            "2",
            "--no-drills",
            "--report",
            "--report-file",
            str(doc),
            "--state",
            str(tmp_path / "state"),
            "--json",
        ],
    )
    assert result.exit_code == 0, result.output
    figures = json.loads(result.stdout[: result.stdout.rindex("}") + 1])
    assert figures["failures"] == []
    assert figures["figures"]["Random frames sent to the enclave's socket"].startswith("300:")
    text = doc.read_text()
    assert "(none yet)" not in text and "Random frames sent to the enclave's socket | 300:" in text
    assert "Verdict: **all properties held**." in text
