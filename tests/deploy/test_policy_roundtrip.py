"""The policy `nitro-llm kms-policy` prints, loaded into the KMS emulator, allows and denies exactly
what it says: admins manage but cannot use the key; clients use it; the enclave role decrypts only with
an attestation document of the measured PCRs."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import Encoding
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm_dev.nsm.devca import DevCA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kms"))
from kms_testing import attest, start_emulator

PCRS = {i: bytes([0x10 + i]) * 48 for i in range(3)}


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    root = tmp_path_factory.mktemp("roundtrip")
    ca = DevCA.load_or_create(root / "dev-ca")
    (root / "root.pem").write_bytes(ca.root_certificate.public_bytes(Encoding.PEM))
    emulator = start_emulator(root / "kms", root / "kms.log", "--trust-root", str(root / "root.pem"))
    creds = emulator.credentials
    measurements = root / "measurements.json"
    inner = {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": v.hex() for i, v in PCRS.items()}}
    measurements.write_text(json.dumps({"Measurements": inner}))
    app = typer.Typer()
    deploy_cli.register(app)
    result = CliRunner().invoke(
        app,
        [
            "kms-policy",
            "--measurements",
            str(measurements),
            "--account",
            creds["account"],
            "--enclave-role",
            creds["enclave_role"]["arn"],
            "--admin",
            creds["admin"]["arn"],
            "--client",
            creds["client"]["arn"],
        ],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    policy = result.stdout
    key_id = emulator.client("admin").create_key(Policy=policy)["KeyMetadata"]["KeyId"]
    blob = emulator.client("client").generate_data_key(KeyId=key_id, KeySpec="AES_256")["CiphertextBlob"]
    yield emulator, ca, key_id, blob
    emulator.stop()


def code(exc_info) -> str:
    return exc_info.value.response["Error"]["Code"]


def test_admin_manages_but_cannot_use(world):
    emulator, _, key_id, blob = world
    admin = emulator.client("admin")
    assert admin.describe_key(KeyId=key_id)["KeyMetadata"]["KeyId"] == key_id
    policy = admin.get_key_policy(KeyId=key_id, PolicyName="default")["Policy"]
    admin.put_key_policy(KeyId=key_id, PolicyName="default", Policy=policy)
    for call in (
        lambda: admin.decrypt(CiphertextBlob=blob),
        lambda: admin.generate_data_key(KeyId=key_id, KeySpec="AES_256"),
        lambda: admin.encrypt(KeyId=key_id, Plaintext=b"x"),
    ):
        with pytest.raises(admin.exceptions.ClientError) as info:
            call()
        assert code(info) == "AccessDeniedException"


def test_client_uses_the_key(world):
    emulator, _, key_id, blob = world
    client = emulator.client("client")
    assert len(client.decrypt(CiphertextBlob=blob)["Plaintext"]) == 32
    assert client.encrypt(KeyId=key_id, Plaintext=b"x")["CiphertextBlob"]


def test_enclave_role_without_attestation_denied(world):
    emulator, _, _, blob = world
    role = emulator.client("enclave_role")
    with pytest.raises(role.exceptions.ClientError) as info:
        role.decrypt(CiphertextBlob=blob)
    assert code(info) == "AccessDeniedException"


def test_enclave_role_with_measured_pcrs_allowed(world):
    emulator, ca, _, blob = world
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = attest(ca, PCRS, key)
    reply = emulator.client("enclave_role").decrypt(
        CiphertextBlob=blob,
        Recipient={"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document},
    )
    assert reply["CiphertextForRecipient"] and not reply.get("Plaintext")


@pytest.mark.parametrize("index", [0, 1, 2])
def test_enclave_role_with_any_other_pcr_denied(world, index):
    emulator, ca, _, blob = world
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    document = attest(ca, {**PCRS, index: b"\xee" * 48}, key)
    role = emulator.client("enclave_role")
    with pytest.raises(role.exceptions.ClientError) as info:
        role.decrypt(
            CiphertextBlob=blob,
            Recipient={"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256", "AttestationDocument": document},
        )
    assert code(info) == "AccessDeniedException"


# -- a rolling update: the policy of two manifests, in the emulator ---------------------------------

NEW_PCRS = {0: b"\x20" * 48, 1: PCRS[1], 2: b"\x22" * 48}


def _policy_of(creds: dict, *measurement_files: Path) -> str:
    app = typer.Typer()
    deploy_cli.register(app)
    args = ["kms-policy", "--account", creds["account"], "--enclave-role", creds["enclave_role"]["arn"]]
    args += ["--admin", creds["admin"]["arn"], "--client", creds["client"]["arn"]]
    for path in measurement_files:
        args += ["--measurements", str(path)]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def _measurements(path: Path, pcrs: dict[int, bytes]) -> Path:
    inner = {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": v.hex() for i, v in pcrs.items()}}
    path.write_text(json.dumps({"Measurements": inner}))
    return path


def _decrypts(emulator, ca, blob: bytes, pcrs: dict[int, bytes]) -> bool:
    role = emulator.client("enclave_role")
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    try:
        role.decrypt(
            CiphertextBlob=blob,
            Recipient={
                "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                "AttestationDocument": attest(ca, pcrs, key),
            },
        )
    except role.exceptions.ClientError as exc:
        assert exc.response["Error"]["Code"] == "AccessDeniedException"
        return False
    return True


def test_rolling_update_widen_then_narrow(world, tmp_path):
    """Widened to old+new, both images decrypt and a mix of them does not; narrowed to the new
    manifest, the old image is refused."""
    emulator, ca, key_id, blob = world
    old = _measurements(tmp_path / "old.json", PCRS)
    new = _measurements(tmp_path / "new.json", NEW_PCRS)
    admin = emulator.client("admin")
    admin.put_key_policy(
        KeyId=key_id, PolicyName="default", Policy=_policy_of(emulator.credentials, old, new)
    )
    try:
        assert _decrypts(emulator, ca, blob, PCRS)
        assert _decrypts(emulator, ca, blob, NEW_PCRS)
        assert not _decrypts(emulator, ca, blob, {**PCRS, 2: NEW_PCRS[2]})
        assert not _decrypts(emulator, ca, blob, {**NEW_PCRS, 0: PCRS[0]})
        admin.put_key_policy(KeyId=key_id, PolicyName="default", Policy=_policy_of(emulator.credentials, new))
        assert _decrypts(emulator, ca, blob, NEW_PCRS)
        assert not _decrypts(emulator, ca, blob, PCRS)
    finally:  # the module's other tests expect the one-image policy
        admin.put_key_policy(KeyId=key_id, PolicyName="default", Policy=_policy_of(emulator.credentials, old))
