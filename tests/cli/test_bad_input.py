"""Bad input to the product's commands is refused with one clear line and a usage exit code: no
traceback, no directories created on a typo. And output that is not a terminal keeps its lines:
rich must not wrap a long error message at 80 columns in a log or a pipe."""

from pathlib import Path

import pytest
from vectors import vectors_dir

DOCUMENT = vectors_dir() / "nitro-attestation" / "veracruz-production.cbor"


def test_gateway_token_refuses_a_missing_directory_and_creates_nothing(nitro, tmp_path):
    target = tmp_path / "nonexistent" / "dir" / "tokens.json"
    result = nitro("gateway-token", str(target), "alice")
    assert result.returncode == 2, result
    assert "is not a directory" in result.stderr and str(target.parent) in result.stderr
    assert not (tmp_path / "nonexistent").exists()
    assert result.stdout == ""  # no token was issued
    made = nitro("gateway-token", str(tmp_path / "tokens.json"), "alice")
    assert made.returncode == 0 and len(made.stdout.strip()) > 20  # an existing folder still works


@pytest.mark.parametrize("max_age", ["nan", "1e308", "inf", "-5", "0"])
def test_attest_verify_refuses_an_absurd_max_age_without_a_traceback(nitro, max_age):
    result = nitro("attest", "verify", str(DOCUMENT), "--at", "document", "--max-age", max_age)
    assert result.returncode == 2, result
    assert "Traceback" not in result.stderr
    assert "--max-age must be a number of seconds" in result.stderr


def test_attest_verify_still_takes_a_sane_max_age(nitro):
    result = nitro("attest", "verify", str(DOCUMENT), "--at", "document", "--max-age", "60")
    assert result.returncode == 0, result.stderr


def test_unicode_digits_are_no_pcr_index(nitro):
    result = nitro("attest", "verify", str(DOCUMENT), "--at", "document", "--expect-pcr", "٠=" + "00" * 48)
    assert result.returncode == 2 and "N=HEX" in result.stderr


def one_line_holding(text: str, output: str) -> bool:
    return any(text in line for line in output.splitlines())


def test_piped_errors_are_not_wrapped_at_80_columns(nitro, home, tmp_path):
    deep = tmp_path / ("a-folder-name-long-enough-to-push-the-line-past-eighty-columns" * 2) / "client.json"
    result = nitro("ask", "--protocol", "kms", "--config", str(deep), "hi")
    assert result.returncode == 2
    assert one_line_holding(f"[no_local_stack] no client configuration at {deep} (start the", result.stderr)
    # the fallback note (a long line of its own) and a usage error keep their lines too
    note = nitro("ask", "--config", str(deep), "hi").stderr
    assert one_line_holding(f"no client policy at {home / 'local' / 'policy.json'}: using the kms", note)
    assert one_line_holding("the kms protocol, where the KMS key policy, not this machine, checks", note)
    usage = nitro("ask", "--protocol", "kms", "--hybrid", "hi")
    assert usage.returncode == 2
    assert one_line_holding("exists only in the attested protocol", usage.stderr)
    assert one_line_holding("the ML-KEM hybrid seals to the enclave's attested key, so it", usage.stderr)


def test_piped_attest_errors_are_not_wrapped(nitro, tmp_path):
    missing = tmp_path / ("x" * 90) / "doc.cbor"
    result = nitro("attest", "verify", str(missing))
    assert result.returncode == 2
    assert one_line_holding(f"cannot read {missing}: No such file or directory", result.stderr)


def test_the_fixture_documents_exist():
    assert Path(DOCUMENT).is_file()
