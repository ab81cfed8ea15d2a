"""`nitro-llm attest ...`: exit codes, one-line reasons, JSON output."""

from __future__ import annotations

import base64
import json

import pytest
from typer.testing import CliRunner
from vectors import vectors_dir

from nitro_llm.cli.main import full_app

app = full_app()


VECTORS = vectors_dir() / "nitro-attestation"
VERACRUZ = VECTORS / "veracruz-production.cbor"
PCR0 = "22f9e1c949208da55eb01b9b9fc88f87454f77ba133f0d82320b509621c92482152a99d0a12335b97178c02d6f977d01"
NONCE = "c678c86135de539d183acff58886d98dfb9823041af9f934bf909ac0f8d96245"


@pytest.fixture
def run():
    runner = CliRunner()

    def invoke(*args: str):
        return runner.invoke(app, ["attest", *args], catch_exceptions=False)

    return invoke


def test_verify_real_document_at_its_timestamp_succeeds(run):
    result = run("verify", str(VERACRUZ), "--at", "document", "--expect-pcr", f"0={PCR0}", "--nonce", NONCE)
    assert result.exit_code == 0, result.stderr
    assert "VERIFIED" in result.stdout


def test_verify_today_fails_with_a_one_line_reason(run):
    result = run("verify", str(VERACRUZ))
    assert result.exit_code == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("REJECTED (chain.validity): leaf") and "expired" in lines[0]


def test_verify_json_reports_every_check_and_the_error(run):
    ok = run("verify", str(VERACRUZ), "--at", "2022-11-09T22:53:00Z", "--json")
    assert ok.exit_code == 0
    report = json.loads(ok.stdout)
    assert report["ok"] and report["document"]["nonce"] == NONCE
    wrong_pcr = "0=" + "00" * 48
    bad = run("verify", str(VERACRUZ), "--at", "document", "--expect-pcr", wrong_pcr, "--json")
    assert bad.exit_code == 1
    data = json.loads(bad.stdout)
    assert data["ok"] is False and data["error"]["code"] == "attestation_pcr_mismatch"
    assert data["checks"][-1] == {
        "name": "pcrs",
        "passed": False,
        "skipped": False,
        "detail": data["checks"][-1]["detail"],
    }
    assert bad.stderr.startswith("REJECTED (pcrs): PCR0 is")


@pytest.mark.parametrize(
    ("args", "check"),
    [
        (["--nonce", "00" * 32], "nonce"),
        (["--max-age", "60"], "freshness"),
        (["--user-data", "abcd"], "user_data"),
    ],
)
def test_verify_policy_failures_name_their_check(run, args, check):
    at = "2022-11-09T22:55:00Z"  # 3 minutes after the document was issued
    result = run("verify", str(VERACRUZ), "--at", at, *args)
    assert result.exit_code == 1
    assert result.stderr.startswith(f"REJECTED ({check}):")


def test_bad_signature_and_debug_documents(run):
    bad = run("verify", str(VECTORS / "veracruz-production-bad-signature.cbor"), "--at", "document")
    assert bad.exit_code == 1 and bad.stderr.startswith("REJECTED (cose.signature)")
    debug = VECTORS / "evervault-debug-mode.cbor"
    assert run("verify", str(debug), "--at", "document").stderr.startswith("REJECTED (debug_mode)")
    assert run("verify", str(debug), "--at", "document", "--allow-debug").exit_code == 0


def test_base64_documents_are_accepted(run, tmp_path):
    encoded = tmp_path / "doc.b64"
    encoded.write_bytes(base64.encodebytes(VERACRUZ.read_bytes()))
    assert run("verify", str(encoded), "--at", "document").exit_code == 0


def test_emulated_document_needs_the_dev_root(run, emulated, dev_ca, tmp_path):
    doc = tmp_path / "emulated.cbor"
    doc.write_bytes(emulated.attest())
    rejected = run("verify", str(doc))
    assert rejected.exit_code == 1 and rejected.stderr.startswith("REJECTED (chain.root)")
    accepted = run("verify", str(doc), "--root", str(dev_ca.root_pem_path), "--expect-pcr", "0=" + "10" * 48)
    assert accepted.exit_code == 0, accepted.stderr


def test_usage_errors_exit_2(run, tmp_path):
    assert run("verify", str(VERACRUZ), "--expect-pcr", "0=zz").exit_code == 2
    assert run("verify", str(VERACRUZ), "--expect-pcr", "40=" + "00" * 48).exit_code == 2
    assert run("verify", str(VERACRUZ), "--at", "yesterday").exit_code == 2
    assert run("verify", str(tmp_path / "absent.cbor")).exit_code == 2
    assert run("verify", str(VERACRUZ), "--root", str(tmp_path / "absent.pem")).exit_code == 2


def test_garbage_file_is_rejected_as_schema(run, tmp_path):
    junk = tmp_path / "junk.bin"
    junk.write_bytes(b"\x84\x01\x02")
    result = run("verify", str(junk))
    assert result.exit_code == 1 and result.stderr.startswith("REJECTED (schema)")
    assert run("show", str(junk)).exit_code == 1


def test_show_prints_the_fields_and_says_unverified(run):
    result = run("show", str(VECTORS / "sparsity-debug-mode.cbor"))
    assert result.exit_code == 0
    assert "i-07fd4cc4df935eab0-enc01915a74e6ed4aa6" in result.stdout
    assert "not verified" in result.stdout
    data = json.loads(run("show", str(VERACRUZ), "--json").stdout)
    assert data["pcrs"]["0"] == PCR0 and data["cabundle"][0]["subject"].startswith("CN=aws.nitro-enclaves")


def test_pcr_prints_measurements_and_computed_pcr3_pcr4(run, tmp_path):
    measurements = tmp_path / "m.json"
    measurements.write_text(
        json.dumps(
            {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR0, "PCR2": PCR0}}
        )
    )
    result = run(
        "pcr", "--measurements", str(measurements), "--role-arn", "arn:aws:iam::123456789012:role/Webserver"
    )
    assert result.exit_code == 0
    assert f"PCR0 {PCR0}" in result.stdout
    pcr3 = "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6"
    assert f"PCR3 {pcr3}" in result.stdout
    assert run("pcr").exit_code == 2


def test_pcr4_from_the_cli_matches_the_real_document(run):
    pcr4 = json.loads(run("pcr", "--instance-id", "i-04fd167167daacf3b", "--json").stdout)["PCR4"]
    shown = json.loads(run("show", str(VERACRUZ), "--json").stdout)
    assert shown["pcrs"]["4"] == pcr4


def test_measure_prints_the_emulated_pcrs(run, tmp_path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "app.py").write_text("print(1)\n")
    model = tmp_path / "m.gguf"
    model.write_bytes(b"GGUF")
    config = tmp_path / "config.json"
    config.write_text('{"mode": "chat"}')
    from nitro_llm_dev.nsm.measure import measure_enclave

    expected = measure_enclave(code, model, {"mode": "chat"})
    args = ["measure", "--code-root", str(code), "--model", str(model), "--config", str(config), "--json"]
    result = run(*args)
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {f"PCR{i}": v.hex() for i, v in expected.items()}
    debug = json.loads(run(*args, "--debug").stdout)
    assert set(debug.values()) == {"00" * 48}


def test_untrusted_text_cannot_drive_the_terminal(run, forger, dev_ca, tmp_path):
    doc = tmp_path / "evil.cbor"
    doc.write_bytes(forger.document(module_id="i-0\x1b[2J[bold red]pwned[/]", user_data=b"\x1b]0;title\x07"))
    shown = run("show", str(doc))
    assert shown.exit_code == 0
    assert "\x1b" not in shown.stdout and "\x07" not in shown.stdout
    assert "[bold red]pwned[/]" in shown.stdout  # printed literally, not interpreted as markup
    verified = run("verify", str(doc), "--root", str(dev_ca.root_pem_path))
    assert verified.exit_code == 0 and "\x1b" not in verified.stdout
