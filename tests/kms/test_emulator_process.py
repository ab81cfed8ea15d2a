"""The KMS emulator as a real process on 127.0.0.1, driven by boto3: the issue's must-show denials.

Each refusal is checked for the exception name (and HTTP status) AWS KMS gives in the same case.
Attestation documents come from the emulated NSM, signed by a dev CA the emulator trusts (or, for
the untrusted-root case, by another CA of the same shape).
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import threading
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from cryptography.hazmat.primitives.asymmetric import rsa
from kms_testing import REGION, attest, spki, start_emulator
from vectors import vector

from nitro_llm.kms.client import make_kms_client
from nitro_llm.kms.cms import open_enveloped_data
from nitro_llm.kms.key_policy import build_key_policy

pytestmark = pytest.mark.slow

PCRS = {0: os.urandom(48), 1: os.urandom(48), 2: os.urandom(48)}
CONTEXT = {"nitro-llm:conversation": "0123456789abcdef0123456789abcdef"}
ALIAS = "alias/nitro-llm-test"


def error_of(exc: ClientError) -> tuple[str, int]:
    return exc.response["Error"]["Code"], exc.response["ResponseMetadata"]["HTTPStatusCode"]


def expect(code: str, call: Any, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert error_of(info.value) == (code, 500 if code == "KMSInternalException" else 400), info.value.response
    return info.value


@pytest.fixture(scope="module")
def emu(tmp_path_factory: pytest.TempPathFactory, dev_ca: Any) -> Any:
    root = tmp_path_factory.mktemp("emu")
    process = start_emulator(
        root / "kms", root / "kms-emulator.log", "--trust-root", str(dev_ca.root_pem_path)
    )
    yield process
    process.stop()


@pytest.fixture(scope="module")
def key_arn(emu: Any) -> str:
    creds = emu.credentials
    policy = build_key_policy(
        account=creds["account"],
        admin_arn=creds["admin"]["arn"],
        client_arns=[creds["client"]["arn"]],
        enclave_role_arn=creds["enclave_role"]["arn"],
        pcrs={i: v.hex() for i, v in PCRS.items()},
    )
    admin = emu.client("admin")
    meta = admin.create_key(Policy=json.dumps(policy), Description="must-show")["KeyMetadata"]
    admin.create_alias(AliasName=ALIAS, TargetKeyId=meta["KeyId"])
    return meta["Arn"]


@pytest.fixture(scope="module")
def data_key(emu: Any, key_arn: str) -> dict[str, Any]:
    return emu.client("client").generate_data_key(KeyId=ALIAS, KeySpec="AES_256", EncryptionContext=CONTEXT)


def recipient(document: bytes) -> dict[str, Any]:
    return {"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document}


def test_credentials_file_is_private_and_complete(emu):
    path = emu.state_dir / "credentials.json"
    assert path.stat().st_mode & 0o777 == 0o600
    creds = emu.credentials
    assert set(creds) >= {"account", "region", "admin", "client", "enclave_role"}
    assert creds["enclave_role"]["arn"].endswith(":role/nitro-llm-enclave")
    assert creds["enclave_role"]["session_token"]
    assert creds["enclave_role"]["access_key_id"].startswith("ASIA")


def test_the_enclave_roles_credentials_are_also_written_alone(emu):
    """``enclave-role.json`` is what the gateway is given: the role's entry, no other principal's."""
    path = emu.state_dir / "enclave-role.json"
    assert path.stat().st_mode & 0o777 == 0o600
    assert json.loads(path.read_text()) == emu.credentials["enclave_role"]


def test_client_round_trip(emu, key_arn, data_key):
    assert data_key["KeyId"] == key_arn and len(data_key["Plaintext"]) == 32
    out = emu.client("client").decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=CONTEXT)
    assert out["Plaintext"] == data_key["Plaintext"] and out["KeyId"] == key_arn


def test_enclave_with_attestation_gets_ciphertext_for_recipient(emu, dev_ca, recipient_key, data_key):
    document = attest(dev_ca, PCRS, recipient_key)
    out = emu.client("enclave_role").decrypt(
        CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=CONTEXT, Recipient=recipient(document)
    )
    assert "Plaintext" not in out  # as AWS: no plaintext field at all for attested requests
    assert open_enveloped_data(out["CiphertextForRecipient"], recipient_key) == data_key["Plaintext"]


def test_enclave_role_without_recipient_is_denied(emu, data_key):
    """The parent holds the same role credentials: without attestation the explicit Deny applies."""
    err = expect(
        "AccessDeniedException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
    )
    assert "with an explicit deny in a resource-based policy" in err.response["Error"]["Message"]
    assert ":assumed-role/nitro-llm-enclave/" in err.response["Error"]["Message"]


def test_recipient_with_other_pcrs_is_denied(emu, dev_ca, recipient_key, data_key):
    changed = {**PCRS, 0: os.urandom(48)}  # an enclave whose code changed
    err = expect(
        "AccessDeniedException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
        Recipient=recipient(attest(dev_ca, changed, recipient_key)),
    )
    assert (
        "because no resource-based policy allows the kms:Decrypt action" in err.response["Error"]["Message"]
    )


def test_debug_mode_document_is_denied(emu, dev_ca, recipient_key, data_key):
    expect(
        "AccessDeniedException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
        Recipient=recipient(attest(dev_ca, PCRS, recipient_key, debug=True)),
    )


def test_document_from_untrusted_root_is_invalid(emu, rogue_ca, recipient_key, data_key):
    """Right PCRs, right shape, wrong signer: refused before the policy is even consulted."""
    expect(
        "ValidationException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
        Recipient=recipient(attest(rogue_ca, PCRS, recipient_key)),
    )


def test_real_aws_document_is_refused_here(emu, data_key):
    """AWS-signed, but its leaf expired in 2022 (and the emulator was told to trust only the dev root)."""
    expect(
        "ValidationException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
        Recipient=recipient(vector("nitro-attestation/veracruz-production.cbor")),
    )


def test_stale_document_is_invalid(emu, dev_ca, recipient_key, data_key):
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=10)
    expect(
        "ValidationException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
        Recipient=recipient(attest(dev_ca, PCRS, recipient_key, at=old)),
    )


def test_document_without_rsa_key_is_invalid(emu, dev_ca, data_key):
    for public_key in (b"", b"not a key"):
        expect(
            "ValidationException",
            emu.client("enclave_role").decrypt,
            CiphertextBlob=data_key["CiphertextBlob"],
            EncryptionContext=CONTEXT,
            Recipient=recipient(attest(dev_ca, PCRS, None, public_key=public_key or None)),
        )


def test_garbage_document_is_invalid(emu, data_key):
    expect(
        "ValidationException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        Recipient=recipient(b"\xa0garbage"),
    )


def test_wrong_encryption_context(emu, dev_ca, recipient_key, data_key):
    wrong = {"nitro-llm:conversation": "f" * 32}
    expect(
        "InvalidCiphertextException",
        emu.client("client").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=wrong,
    )
    expect(
        "InvalidCiphertextException", emu.client("client").decrypt, CiphertextBlob=data_key["CiphertextBlob"]
    )
    expect(
        "InvalidCiphertextException",
        emu.client("enclave_role").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=wrong,
        Recipient=recipient(attest(dev_ca, PCRS, recipient_key)),
    )


@pytest.mark.parametrize("where", [0, 10, 40, 45, 60, -1])
def test_tampered_ciphertext(emu, data_key, where):
    blob = bytearray(data_key["CiphertextBlob"])
    blob[where] ^= 0x01
    expect(
        "InvalidCiphertextException",
        emu.client("client").decrypt,
        CiphertextBlob=bytes(blob),
        EncryptionContext=CONTEXT,
    )


def test_truncated_ciphertext(emu, data_key):
    expect(
        "InvalidCiphertextException",
        emu.client("client").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"][:30],
        EncryptionContext=CONTEXT,
    )


def test_parent_cannot_generate_data_keys_or_manage(emu, key_arn):
    parent = emu.client("enclave_role")
    expect("AccessDeniedException", parent.generate_data_key, KeyId=key_arn, KeySpec="AES_256")
    expect("AccessDeniedException", parent.put_key_policy, KeyId=key_arn, PolicyName="default", Policy="{}")
    expect("AccessDeniedException", parent.create_key)


def test_admin_cannot_read_data(emu, data_key):
    expect(
        "AccessDeniedException",
        emu.client("admin").decrypt,
        CiphertextBlob=data_key["CiphertextBlob"],
        EncryptionContext=CONTEXT,
    )


def test_generate_random_for_recipient(emu, dev_ca, recipient_key):
    out = emu.client("enclave_role").generate_random(
        NumberOfBytes=48, Recipient=recipient(attest(dev_ca, PCRS, recipient_key))
    )
    assert "Plaintext" not in out
    assert len(open_enveloped_data(out["CiphertextForRecipient"], recipient_key)) == 48


def test_generate_data_key_for_recipient(emu, dev_ca, recipient_key, key_arn):
    client = emu.client("client")
    out = client.generate_data_key(
        KeyId=key_arn,
        KeySpec="AES_256",
        EncryptionContext=CONTEXT,
        Recipient=recipient(attest(dev_ca, PCRS, recipient_key)),
    )
    assert "Plaintext" not in out
    data_key = open_enveloped_data(out["CiphertextForRecipient"], recipient_key)
    assert (
        client.decrypt(CiphertextBlob=out["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"]
        == data_key
    )


def test_bad_signatures(emu):
    creds = emu.credentials
    forged = make_kms_client(emu.url, {**creds["client"], "secret_access_key": "x" * 40}, REGION)
    expect("InvalidSignatureException", forged.list_aliases)
    unknown = make_kms_client(
        emu.url, {"access_key_id": "AKIAUNKNOWN000000000", "secret_access_key": "x"}, REGION
    )
    expect("UnrecognizedClientException", unknown.list_aliases)
    no_token = make_kms_client(emu.url, {**creds["enclave_role"], "session_token": None}, REGION)
    expect("UnrecognizedClientException", no_token.list_aliases)
    wrong_region = make_kms_client(emu.url, creds["client"], "eu-west-1")
    expect("InvalidSignatureException", wrong_region.list_aliases)


def test_concurrent_requests(emu, data_key):
    """16 threads, 8 requests each, over separate connections: all answered, all correct."""
    client_creds = emu.credentials["client"]
    errors: list[BaseException] = []

    def worker() -> None:
        client = make_kms_client(emu.url, client_creds, REGION)
        try:
            for _ in range(8):
                out = client.decrypt(CiphertextBlob=data_key["CiphertextBlob"], EncryptionContext=CONTEXT)
                assert out["Plaintext"] == data_key["Plaintext"]
        except BaseException as exc:  # collected and re-raised in the test thread
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert not errors, errors[:3]
    assert not any(t.is_alive() for t in threads)


def test_log_has_one_line_per_request_and_no_secrets(emu, data_key, recipient_key):
    log = emu.log()
    creds = emu.credentials
    forbidden = [
        base64.b64encode(data_key["Plaintext"]).decode(),
        data_key["Plaintext"].hex(),
        base64.b64encode(data_key["CiphertextBlob"]).decode()[:40],
        creds["client"]["secret_access_key"],
        creds["admin"]["secret_access_key"],
        creds["enclave_role"]["secret_access_key"],
        creds["enclave_role"]["session_token"],
        base64.b64encode(spki(recipient_key)).decode()[:40],
    ]
    for needle in forbidden:
        assert needle not in log
    lines = [line for line in log.splitlines() if " request op=" in line]
    assert any("op=Decrypt" in line and "outcome=AccessDeniedException" in line for line in lines)
    assert any("op=Decrypt" in line and "outcome=ok" in line and "attested_pcr0=" in line for line in lines)
    assert all(" principal=" in line and " key=" in line and " outcome=" in line for line in lines)


def test_restart_keeps_keys_aliases_policies_and_credentials(tmp_path: Path, dev_ca, recipient_key):
    """A real stop (SIGTERM) and start on the same state directory."""
    state = tmp_path / "kms"
    first = start_emulator(state, tmp_path / "log1", "--trust-root", str(dev_ca.root_pem_path))
    try:
        creds = first.credentials
        policy = build_key_policy(
            creds["account"],
            creds["admin"]["arn"],
            [creds["client"]["arn"]],
            creds["enclave_role"]["arn"],
            {i: v.hex() for i, v in PCRS.items()},
        )
        admin = first.client("admin")
        meta = admin.create_key(Policy=json.dumps(policy))["KeyMetadata"]
        admin.create_alias(AliasName="alias/restart", TargetKeyId=meta["KeyId"])
        admin.disable_key(KeyId=meta["KeyId"])
        admin.enable_key(KeyId=meta["KeyId"])
        dk = first.client("client").generate_data_key(
            KeyId="alias/restart", KeySpec="AES_256", EncryptionContext=CONTEXT
        )
    finally:
        assert first.stop() == 0
    assert {p.name for p in state.iterdir()} >= {"credentials.json", "keys.json"}
    assert (state / "keys.json").stat().st_mode & 0o777 == 0o600
    assert not [p for p in state.iterdir() if p.name.endswith(".tmp")]

    second = start_emulator(state, tmp_path / "log2", "--trust-root", str(dev_ca.root_pem_path))
    try:
        assert second.credentials == creds
        assert second.url != first.url or True  # a new port is fine; the state is what must survive
        client = second.client("client")
        assert (
            client.decrypt(CiphertextBlob=dk["CiphertextBlob"], EncryptionContext=CONTEXT)["Plaintext"]
            == dk["Plaintext"]
        )
        assert client.describe_key(KeyId="alias/restart")["KeyMetadata"]["KeyId"] == meta["KeyId"]
        assert json.loads(second.client("admin").get_key_policy(KeyId=meta["KeyId"])["Policy"]) == policy
        out = second.client("enclave_role").decrypt(
            CiphertextBlob=dk["CiphertextBlob"],
            EncryptionContext=CONTEXT,
            Recipient=recipient(attest(dev_ca, PCRS, recipient_key)),
        )
        assert open_enveloped_data(out["CiphertextForRecipient"], recipient_key) == dk["Plaintext"]
        expect(
            "AccessDeniedException",
            second.client("enclave_role").decrypt,
            CiphertextBlob=dk["CiphertextBlob"],
            EncryptionContext=CONTEXT,
        )
    finally:
        second.stop()


def test_second_emulator_on_the_same_state_is_refused(tmp_path: Path):
    first = start_emulator(tmp_path / "kms", tmp_path / "log1")
    try:
        with pytest.raises(AssertionError, match="another KMS emulator"):
            start_emulator(tmp_path / "kms", tmp_path / "log2")
    finally:
        first.stop()


def test_default_trust_root_is_aws_only(tmp_path: Path, dev_ca, recipient_key):
    """Without --trust-root the emulator trusts only the AWS Nitro root, so dev documents are invalid."""
    emu = start_emulator(tmp_path / "kms", tmp_path / "log")
    try:
        expect(
            "ValidationException",
            emu.client("client").generate_random,
            NumberOfBytes=8,
            Recipient=recipient(attest(dev_ca, PCRS, recipient_key)),
        )
    finally:
        emu.stop()


def test_non_loopback_host_is_refused(tmp_path: Path):
    import subprocess
    import sys

    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "nitro_llm.cli.main",
            "kms-emulator",
            "--host",
            "0.0.0.0",
            "--state-dir",
            str(tmp_path / "kms"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.returncode != 0
    assert "--allow-remote" in out.stderr
    assert not (tmp_path / "kms").exists()


def test_recipient_key_is_rsa(recipient_key):
    assert isinstance(recipient_key, rsa.RSAPrivateKey)
