"""The gateway is given the enclave role's credentials and nothing more (issue: local mode once handed
it the emulator's whole credentials.json, with the data owner's and the admin's secret keys, with which
a gateway could decrypt a captured data key without attestation). A wrong file stops it at start."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from nitro_llm.gateway.credentials import FileCredentialsSource
from nitro_llm.gateway.errors import CredentialsFileError, CredentialsFileTooBroad

ROLE = {
    "arn": "arn:aws:iam::111122223333:role/nitro-llm-enclave",
    "session_arn": "arn:aws:sts::111122223333:assumed-role/nitro-llm-enclave/i-0e1c1a7e5e551011a",
    "access_key_id": "ASIAEXAMPLEEXAMPLE01",
    "secret_access_key": "role-secret-never-printed",
    "session_token": "role-session-token",
}
WHOLE_EMULATOR_FILE = {
    "account": "111122223333",
    "region": "eu-west-1",
    "admin": {"access_key_id": "AKIAADMIN", "secret_access_key": "admin-secret-never-printed"},
    "client": {"access_key_id": "AKIACLIENT", "secret_access_key": "client-secret-never-printed"},
    "enclave_role": ROLE,
}


def _write(tmp_path: Path, data: object) -> Path:
    path = tmp_path / "creds.json"
    path.write_text(json.dumps(data))
    return path


def test_reads_one_roles_credentials(tmp_path):
    creds = FileCredentialsSource(_write(tmp_path, ROLE)).get()
    assert creds.access_key_id == ROLE["access_key_id"]
    assert creds.secret_access_key == ROLE["secret_access_key"]
    assert creds.session_token == ROLE["session_token"]


def test_refuses_a_file_with_other_principals_keys(tmp_path):
    with pytest.raises(CredentialsFileTooBroad) as info:
        FileCredentialsSource(_write(tmp_path, WHOLE_EMULATOR_FILE)).get()
    assert "admin" in info.value.message and "client" in info.value.message
    assert "secret" not in str(info.value)  # names the entries, never their values


@pytest.mark.parametrize(
    "content",
    ["not json", "[]", json.dumps({"access_key_id": "A"}), json.dumps({**ROLE, "secret_access_key": 5})],
)
def test_refuses_unreadable_or_incomplete_files(tmp_path, content):
    path = tmp_path / "creds.json"
    path.write_text(content)
    with pytest.raises(CredentialsFileError):
        FileCredentialsSource(path).get()


def _gateway(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nitro_llm.cli.main", "gateway", "--port", "0", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--enclave", "bogus"], "'bogus' is not an address"),
        (["--enclave", "tcp:127.0.0.1:99999"], "--enclave"),
        (["--enclave", "unix:/tmp/x.sock", "--credentials-file", "/nonexistent.json"], "cannot read"),
    ],
)
def test_the_gateway_process_refuses_bad_configuration_at_start(args, says):
    """Before: it kept running and logged a failed connection or hand-off every second."""
    done = _gateway(*args)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr


def test_the_gateway_process_refuses_the_emulators_whole_credentials_file(tmp_path):
    done = _gateway(
        "--enclave", "unix:/tmp/x.sock", "--credentials-file", str(_write(tmp_path, WHOLE_EMULATOR_FILE))
    )
    assert done.returncode == 2, done.stderr
    assert "more than one role" in done.stderr
    assert "never-printed" not in done.stderr + done.stdout
