"""The emulator's operations in-process (same HTTP server and boto3, without a process per test)."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.exceptions import ClientError
from kms_testing import REGION, attest

from nitro_llm.kms.client import make_kms_client
from nitro_llm.kms.errors import EmulatorStateError
from nitro_llm_dev.kms_emulator import EmulatorConfig, EmulatorServer

CTX = {"purpose": "test"}


@pytest.fixture
def server(tmp_path: Path, dev_ca: Any) -> Any:
    with EmulatorServer(
        EmulatorConfig(state_dir=tmp_path / "kms", region=REGION, trust_roots=[dev_ca.root_certificate])
    ).start() as srv:
        yield srv


def clients(server: Any) -> dict[str, Any]:
    creds = json.loads((server.config.state_dir / "credentials.json").read_text())
    return {
        name: make_kms_client(server.url, creds[name], REGION) for name in ("admin", "client", "enclave_role")
    }


def code(exc: ClientError) -> str:
    return exc.response["Error"]["Code"]


def fails(code_name: str, call: Any, **kwargs: Any) -> ClientError:
    with pytest.raises(ClientError) as info:
        call(**kwargs)
    assert code(info.value) == code_name, info.value.response["Error"]
    return info.value


def test_default_policy_lets_the_account_use_the_key(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]
    policy = json.loads(c["admin"].get_key_policy(KeyId=key["KeyId"], PolicyName="default")["Policy"])
    assert policy["Statement"][0]["Principal"]["AWS"].endswith(":root")
    blob = c["client"].encrypt(KeyId=key["KeyId"], Plaintext=b"x")["CiphertextBlob"]
    assert c["client"].decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"


def test_key_identifier_forms(server):
    c = clients(server)
    meta = c["admin"].create_key()["KeyMetadata"]
    c["admin"].create_alias(AliasName="alias/forms", TargetKeyId=meta["Arn"])
    alias_arn = meta["Arn"].split(":key/")[0] + ":alias/forms"
    for ref in (meta["KeyId"], meta["Arn"], "alias/forms", alias_arn):
        assert c["client"].describe_key(KeyId=ref)["KeyMetadata"]["KeyId"] == meta["KeyId"]
    fails("NotFoundException", c["client"].describe_key, KeyId="alias/none")
    fails("NotFoundException", c["client"].describe_key, KeyId="00000000-0000-4000-8000-000000000000")
    fails("NotFoundException", c["client"].describe_key, KeyId="not-a-key")
    other_region = meta["Arn"].replace(f":{REGION}:", ":eu-west-1:")
    fails("NotFoundException", c["client"].describe_key, KeyId=other_region)


def test_describe_key_metadata(server):
    c = clients(server)
    meta = c["admin"].create_key(Description="d")["KeyMetadata"]
    assert meta["KeyState"] == "Enabled" and meta["Enabled"] is True
    assert meta["KeySpec"] == "SYMMETRIC_DEFAULT" and meta["KeyUsage"] == "ENCRYPT_DECRYPT"
    assert meta["Description"] == "d" and meta["AWSAccountId"] in meta["Arn"]


def test_create_key_refusals(server):
    c = clients(server)
    fails("UnsupportedOperationException", c["admin"].create_key, KeySpec="RSA_2048")
    fails("UnsupportedOperationException", c["admin"].create_key, KeyUsage="SIGN_VERIFY")
    fails("MalformedPolicyDocumentException", c["admin"].create_key, Policy="{nope")
    account = json.loads((server.config.state_dir / "credentials.json").read_text())["account"]
    ghost = f"arn:aws:iam::{account}:user/ghost"  # never issued: AWS refuses nonexistent principals
    unknown_user = {
        "Statement": [{"Effect": "Allow", "Principal": {"AWS": ghost}, "Action": "kms:*", "Resource": "*"}]
    }
    fails("MalformedPolicyDocumentException", c["admin"].create_key, Policy=json.dumps(unknown_user))


def test_lockout_safety_check(server):
    c = clients(server)
    creds = json.loads((server.config.state_dir / "credentials.json").read_text())
    client_only = json.dumps(
        {
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"AWS": creds["client"]["arn"]},
                    "Action": "kms:*",
                    "Resource": "*",
                }
            ]
        }
    )
    err = fails("MalformedPolicyDocumentException", c["admin"].create_key, Policy=client_only)
    assert "will not allow you to update the key policy" in err.response["Error"]["Message"]
    key = c["admin"].create_key(Policy=client_only, BypassPolicyLockoutSafetyCheck=True)["KeyMetadata"]
    fails("AccessDeniedException", c["admin"].describe_key, KeyId=key["KeyId"])  # locked out, as warned


def test_put_key_policy_validation_and_effect(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]["KeyId"]
    fails(
        "MalformedPolicyDocumentException",
        c["admin"].put_key_policy,
        KeyId=key,
        PolicyName="default",
        Policy=json.dumps({"Statement": [{"Effect": "Allow"}]}),
    )
    fails(
        "MalformedPolicyDocumentException",
        c["admin"].put_key_policy,
        KeyId=key,
        PolicyName="default",
        Policy="[]",
    )
    fails("NotFoundException", c["admin"].put_key_policy, KeyId=key, PolicyName="other", Policy="{}")
    creds = json.loads((server.config.state_dir / "credentials.json").read_text())
    admin_only = {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": creds["admin"]["arn"]},
                "Action": "kms:*",
                "Resource": "*",
            }
        ],
    }
    c["admin"].put_key_policy(KeyId=key, PolicyName="default", Policy=json.dumps(admin_only))
    fails("AccessDeniedException", c["client"].encrypt, KeyId=key, Plaintext=b"x")


def test_enable_disable_and_deletion(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]["KeyId"]
    blob = c["client"].encrypt(KeyId=key, Plaintext=b"x")["CiphertextBlob"]
    c["admin"].disable_key(KeyId=key)
    assert c["admin"].describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"
    fails("DisabledException", c["client"].decrypt, CiphertextBlob=blob)
    fails("DisabledException", c["client"].generate_data_key, KeyId=key, KeySpec="AES_256")
    c["admin"].enable_key(KeyId=key)
    assert c["client"].decrypt(CiphertextBlob=blob)["Plaintext"] == b"x"
    out = c["admin"].schedule_key_deletion(KeyId=key, PendingWindowInDays=7)
    assert out["KeyState"] == "PendingDeletion"
    fails("KMSInvalidStateException", c["client"].decrypt, CiphertextBlob=blob)
    fails("KMSInvalidStateException", c["admin"].enable_key, KeyId=key)
    fails("ValidationException", c["admin"].schedule_key_deletion, KeyId=key, PendingWindowInDays=3)
    c["admin"].cancel_key_deletion(KeyId=key)
    assert c["admin"].describe_key(KeyId=key)["KeyMetadata"]["KeyState"] == "Disabled"


def test_incorrect_key(server):
    c = clients(server)
    a = c["admin"].create_key()["KeyMetadata"]
    b = c["admin"].create_key()["KeyMetadata"]
    c["admin"].create_alias(AliasName="alias/a", TargetKeyId=a["KeyId"])
    c["admin"].create_alias(AliasName="alias/b", TargetKeyId=b["KeyId"])
    blob = c["client"].encrypt(KeyId=a["KeyId"], Plaintext=b"x", EncryptionContext=CTX)["CiphertextBlob"]
    alias_arn = a["Arn"].split(":key/")[0] + ":alias/"
    # Decrypt's KeyId takes every form KMS takes (the enclave passes what the client's header names).
    for wrong in (b["KeyId"], b["Arn"], "alias/b", alias_arn + "b"):
        fails(
            "IncorrectKeyException",
            c["client"].decrypt,
            CiphertextBlob=blob,
            KeyId=wrong,
            EncryptionContext=CTX,
        )
    for right in (a["KeyId"], a["Arn"], "alias/a", alias_arn + "a"):
        answer = c["client"].decrypt(CiphertextBlob=blob, KeyId=right, EncryptionContext=CTX)
        assert answer["Plaintext"] == b"x"


def test_foreign_blob_is_invalid_ciphertext(server):
    c = clients(server)
    fails("InvalidCiphertextException", c["client"].decrypt, CiphertextBlob=b"\x01" * 100)
    c["admin"].create_key()
    fake = b"NLK1" + b"00000000-0000-4000-8000-000000000000" + bytes(40)
    fails("InvalidCiphertextException", c["client"].decrypt, CiphertextBlob=fake)


def test_data_key_and_random_parameters(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]["KeyId"]
    assert len(c["client"].generate_data_key(KeyId=key, NumberOfBytes=64)["Plaintext"]) == 64
    assert len(c["client"].generate_data_key(KeyId=key, KeySpec="AES_128")["Plaintext"]) == 16
    fails("ValidationException", c["client"].generate_data_key, KeyId=key)
    fails(
        "ValidationException", c["client"].generate_data_key, KeyId=key, KeySpec="AES_256", NumberOfBytes=32
    )
    out = c["client"].generate_data_key_without_plaintext(KeyId=key, KeySpec="AES_256")
    assert "Plaintext" not in out
    assert len(c["client"].decrypt(CiphertextBlob=out["CiphertextBlob"])["Plaintext"]) == 32
    assert len(c["client"].generate_random(NumberOfBytes=1024)["Plaintext"]) == 1024
    fails("ValidationException", c["client"].generate_random)
    fails("ValidationException", c["client"].encrypt, KeyId=key, Plaintext=b"x" * 4097)


def test_dry_run(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]["KeyId"]
    err = fails("DryRunOperationException", c["client"].encrypt, KeyId=key, Plaintext=b"x", DryRun=True)
    assert err.response["ResponseMetadata"]["HTTPStatusCode"] == 412
    fails(
        "AccessDeniedException", c["admin"].decrypt, CiphertextBlob=b"\x00" * 60, DryRun=True
    ) if False else None


def test_recipient_with_bad_algorithm(server, dev_ca, recipient_key):
    c = clients(server)
    doc = attest(dev_ca, {0: bytes(48)}, recipient_key)
    fails(
        "ValidationException",
        c["client"].generate_random,
        NumberOfBytes=8,
        Recipient={"KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_1", "AttestationDocument": doc},
    )


def test_encryption_context_conditions(server):
    c = clients(server)
    creds = json.loads((server.config.state_dir / "credentials.json").read_text())
    policy = {
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"AWS": creds["admin"]["arn"]},
                "Action": "kms:*",
                "Resource": "*",
            },
            {
                "Effect": "Allow",
                "Principal": {"AWS": creds["client"]["arn"]},
                "Action": "kms:GenerateDataKey",
                "Resource": "*",
                "Condition": {
                    "StringLike": {"kms:EncryptionContext:tenant": "acme-*"},
                    "ForAllValues:StringEquals": {"kms:EncryptionContextKeys": ["tenant"]},
                },
            },
        ]
    }
    key = c["admin"].create_key(Policy=json.dumps(policy))["KeyMetadata"]["KeyId"]
    c["client"].generate_data_key(KeyId=key, KeySpec="AES_256", EncryptionContext={"tenant": "acme-1"})
    fails(
        "AccessDeniedException",
        c["client"].generate_data_key,
        KeyId=key,
        KeySpec="AES_256",
        EncryptionContext={"tenant": "other"},
    )
    fails(
        "AccessDeniedException",
        c["client"].generate_data_key,
        KeyId=key,
        KeySpec="AES_256",
        EncryptionContext={"tenant": "acme-1", "extra": "x"},
    )
    fails("AccessDeniedException", c["client"].generate_data_key, KeyId=key, KeySpec="AES_256")


def test_aliases_list_and_pages(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]["KeyId"]
    for i in range(5):
        c["admin"].create_alias(AliasName=f"alias/a{i}", TargetKeyId=key)
    fails("AlreadyExistsException", c["admin"].create_alias, AliasName="alias/a0", TargetKeyId=key)
    fails("InvalidAliasNameException", c["admin"].create_alias, AliasName="alias/aws/x", TargetKeyId=key)
    fails("ValidationException", c["admin"].create_alias, AliasName="alias/bad name", TargetKeyId=key)
    fails("NotFoundException", c["admin"].create_alias, AliasName="alias/z", TargetKeyId="alias/a0")
    first = c["client"].list_aliases(Limit=2)
    assert [a["AliasName"] for a in first["Aliases"]] == ["alias/a0", "alias/a1"] and first["Truncated"]
    rest = c["client"].list_aliases(Limit=10, Marker=first["NextMarker"])
    assert [a["AliasName"] for a in rest["Aliases"]] == ["alias/a2", "alias/a3", "alias/a4"]
    assert not rest["Truncated"]
    fails("InvalidMarkerException", c["client"].list_aliases, Marker="zzz")
    assert len(c["client"].list_aliases(KeyId=key)["Aliases"]) == 5
    paginated = [
        a
        for page in c["client"].get_paginator("list_aliases").paginate(PaginationConfig={"PageSize": 2})
        for a in page["Aliases"]
    ]
    assert len(paginated) == 5
    assert [k["KeyId"] for k in c["client"].list_keys()["Keys"]] == [key]


def test_protocol_faults_on_raw_http(server):
    url = server.url
    r = httpx.get(url)
    assert r.status_code == 400 and r.json()["__type"] == "UnknownOperationException"
    r = httpx.post(url, content=b"{}", headers={"Content-Type": "application/x-amz-json-1.1"})
    assert r.json()["__type"] == "UnknownOperationException"
    r = httpx.post(
        url,
        content=b"{}",
        headers={"Content-Type": "application/x-amz-json-1.1", "X-Amz-Target": "TrentService.ListKeys"},
    )
    assert r.status_code == 400 and r.json()["__type"] == "MissingAuthenticationTokenException"
    r = httpx.post(
        url,
        content=b"x" * (2 << 20),
        headers={"X-Amz-Target": "TrentService.ListKeys", "Content-Type": "application/x-amz-json-1.1"},
    )
    assert r.json()["__type"] == "ValidationException"


def test_unknown_operation_and_bad_json_with_valid_signature(server):
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials

    creds = json.loads((server.config.state_dir / "credentials.json").read_text())["client"]

    def send(target: str, body: bytes) -> httpx.Response:
        req = AWSRequest(
            method="POST",
            url=server.url + "/",
            data=body,
            headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
        )
        SigV4Auth(Credentials(creds["access_key_id"], creds["secret_access_key"]), "kms", REGION).add_auth(
            req
        )
        return httpx.post(server.url + "/", content=body, headers=dict(req.headers))

    assert send("TrentService.Sign", b"{}").json()["__type"] == "UnknownOperationException"
    assert send("TrentService.ListKeys", b"{not json").json()["__type"] == "SerializationException"
    assert send("TrentService.ListKeys", b"[1]").json()["__type"] == "SerializationException"
    key = send("TrentService.ListKeys", b"{}").json()["Keys"]
    assert key == []
    bad = send("TrentService.GenerateRandom", json.dumps({"NumberOfBytes": "8"}).encode())
    assert bad.json()["__type"] == "SerializationException"
    bad = send("TrentService.Decrypt", json.dumps({"CiphertextBlob": "%%%"}).encode())
    assert bad.json()["__type"] == "SerializationException"
    ok = send("TrentService.ListKeys", b"{}")
    assert ok.status_code == 200 and ok.headers["content-type"] == "application/x-amz-json-1.1"
    assert ok.headers["x-amzn-requestid"]


def test_state_is_locked_against_a_second_server(tmp_path: Path):
    with EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms")):
        with pytest.raises(EmulatorStateError):
            EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms"))
    EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms")).close()  # free again once closed


def test_region_is_bound_to_the_state(tmp_path: Path):
    EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms", region="us-east-1")).close()
    with pytest.raises(EmulatorStateError, match="region us-east-1"):
        EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms", region="eu-west-1"))


def test_damaged_state_is_refused_not_overwritten(tmp_path: Path):
    EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms")).close()
    (tmp_path / "kms" / "keys.json").write_text("{broken")
    with pytest.raises(EmulatorStateError, match="not valid JSON"):
        EmulatorServer(EmulatorConfig(state_dir=tmp_path / "kms"))
    assert (tmp_path / "kms" / "keys.json").read_text() == "{broken"


def test_key_material_is_only_in_the_private_state_file(server):
    c = clients(server)
    key = c["admin"].create_key()["KeyMetadata"]["KeyId"]
    keys_file = server.config.state_dir / "keys.json"
    assert keys_file.stat().st_mode & 0o777 == 0o600
    assert server.config.state_dir.stat().st_mode & 0o777 == 0o700
    material = json.loads(keys_file.read_text())["keys"][key]["material"]
    assert len(base64.b64decode(material)) == 32
