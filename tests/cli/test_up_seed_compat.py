"""Migrating from the AWS sample in one command: ``nitro-llm up --seed-compat`` starts a stack whose
enclave speaks the seed's format (measured so) and whose gateway opens ``POST /``, and prints what the
sample's client must point at. Everything these tests send is taken from that output: the labelled
lines and the example client, which is run as printed. A wrong secret in a seed request is reported as
a signature problem with a hint about the request's credentials, not as a key-policy (PCR) refusal.
Real processes: the installed command, the echo engine and the source-tree enclave."""

from __future__ import annotations

import base64
import json
import re
import stat
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from cli_processes import NITRO_LLM, UpProcess, cli_env

pytestmark = pytest.mark.slow

FIELD = re.compile(r"^  (seed url|kms endpoint|region|key id|key arn|credentials file):\s+(\S+)$")
CANARY = "MRN-SEED-4417 and her warfarin dose"


@dataclass(frozen=True)
class Printed:
    """What 'up --seed-compat' printed: the labelled lines, the example client, the whole text."""

    fields: dict[str, str]
    snippet: str
    text: str


@dataclass
class SeedUp:
    home: Path
    up: UpProcess
    printed: Printed

    def credentials(self) -> dict[str, str]:
        return json.loads(Path(self.printed.fields["credentials file"]).read_text())

    def kms(self, creds: dict[str, str]) -> Any:
        """A boto3 KMS client as the example builds it, from the printed endpoint and region."""
        return boto3.client(
            "kms",
            region_name=self.printed.fields["region"],
            endpoint_url=self.printed.fields["kms endpoint"],
            aws_access_key_id=creds["access_key_id"],
            aws_secret_access_key=creds["secret_access_key"],
            aws_session_token=creds["token"] or None,
        )

    def seed_post(self, question: str, **change: str) -> httpx.Response:
        """The sample's request, with ``change`` applied to the credentials it carries (not to the
        ones the question is encrypted with)."""
        creds = self.credentials()
        blob = self.kms(creds).encrypt(KeyId=self.printed.fields["key id"], Plaintext=question)
        request = {
            "access_key_id": creds["access_key_id"],
            "secret_access_key": creds["secret_access_key"],
            "token": creds["token"],
            "region": self.printed.fields["region"],
            "ciphertext": base64.b64encode(blob["CiphertextBlob"]).decode(),
        } | change
        return httpx.post(self.printed.fields["seed url"], json=request, timeout=60)


def parse(output: str) -> Printed:
    fields = dict(m.groups() for line in output.splitlines() if (m := FIELD.match(line)))
    snippet = re.search(r"^-+ 8< -+[^\n]*\n(.*?)^-+ >8 -+$", output, re.S | re.M)
    assert snippet, output
    return Printed(fields=fields, snippet=snippet.group(1), text=output)


@pytest.fixture(scope="module")
def seed_up(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SeedUp]:
    home = tmp_path_factory.mktemp("seed-home")
    (home / "local").mkdir()
    up = UpProcess(cli_env(home), "--seed-compat")
    try:
        printed = parse(up.wait_for_line(r"^-+ >8 -+$"))
        yield SeedUp(home=home, up=up, printed=printed)
    finally:
        up.stop()


def test_up_prints_what_the_sample_needs_and_no_secret(seed_up):
    printed = seed_up.printed
    labels = {"seed url", "kms endpoint", "region", "key id", "key arn", "credentials file"}
    assert set(printed.fields) == labels
    assert printed.fields["seed url"] == seed_up.up.gateway_url + "/"
    assert printed.fields["key arn"].startswith(f"arn:aws:kms:{printed.fields['region']}:")
    assert "WEAKER" in printed.text and "credentials pass through this host" in printed.text
    assert "'nitro-llm ask' / 'chat' / 'proxy'" in printed.text
    path = Path(printed.fields["credentials file"])
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    creds = seed_up.credentials()
    assert set(creds) == {"access_key_id", "secret_access_key", "token"}
    assert creds["secret_access_key"] not in seed_up.up.output
    # the emulator's client principal, whose keys the key's policy lets encrypt (checked through KMS)
    kms = seed_up.kms(creds)
    assert kms.describe_key(KeyId=printed.fields["key id"])["KeyMetadata"]["Arn"] == printed.fields["key arn"]


def test_the_printed_example_client_is_answered_end_to_end(seed_up, tmp_path):
    """Copy, paste, run: the example as printed, its question on stdin as the sample reads it."""
    client = tmp_path / "chatbot.py"
    client.write_text(seed_up.printed.snippet)
    run = subprocess.run(
        [sys.executable, str(client)], input=CANARY + "\n", capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[-1].removeprefix("Your Question: ") == CANARY  # the echo engine
    gateway_log = (seed_up.home / "local" / "logs" / "gateway.log").read_text()
    assert CANARY not in gateway_log
    assert seed_up.credentials()["secret_access_key"] not in gateway_log


def test_the_native_protocols_are_served_by_the_same_stack(seed_up):
    asked = subprocess.run(
        [NITRO_LLM, "ask", "hi"], capture_output=True, text=True, timeout=60, env=cli_env(seed_up.home)
    )
    assert asked.returncode == 0, asked.stderr
    assert asked.stdout.strip() == "hi"


def _altered(secret: str) -> str:
    return secret[:-1] + ("A" if secret[-1] != "A" else "B")


@pytest.mark.parametrize(
    ("change", "aws_code"),
    [
        (lambda c: {"secret_access_key": _altered(c["secret_access_key"])}, "InvalidSignatureException"),
        (lambda c: {"access_key_id": "AKIA" + "Q" * 16}, "UnrecognizedClientException"),
    ],
    ids=["wrong-secret", "unknown-access-key"],
)
def test_bad_credentials_are_reported_as_a_signature_problem(seed_up, change, aws_code):
    creds = seed_up.credentials()
    reply = seed_up.seed_post("what is my dose?", **change(creds))
    assert reply.status_code == 403, reply.text
    body = reply.json()
    assert body["code"] == "kms_signature_rejected" and body["retryable"] is False
    assert aws_code in body["message"]
    assert "secret_access_key" in body["hint"] and "token" in body["hint"]
    assert "PCR" not in body["hint"] and "policy's" not in body["hint"]
    secret = creds["secret_access_key"]
    assert secret not in reply.text and _altered(secret) not in reply.text


def test_a_key_policy_refusal_still_points_at_the_pcr_conditions(seed_up):
    """Valid credentials the key's policy does not let decrypt (the emulator's admin): AccessDenied,
    which is the key policy's business, and says so."""
    admin = json.loads((seed_up.home / "local" / "kms" / "credentials.json").read_text())["admin"]
    reply = seed_up.seed_post(
        "what is my dose?", access_key_id=admin["access_key_id"], secret_access_key=admin["secret_access_key"]
    )
    assert reply.status_code == 403, reply.text
    assert reply.json()["code"] == "kms_denied"
    assert "AccessDeniedException" in reply.json()["message"] and "PCR" in reply.json()["hint"]
