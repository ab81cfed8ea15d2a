"""`nitro-llm kms-policy`: measurements file in, key policy JSON out, with the right statements."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli

# PCRs of a real production enclave (test-vectors/SOURCES.md, veracruz-production.cbor).
REAL = {
    0: "22f9e1c949208da55eb01b9b9fc88f87454f77ba133f0d82320b509621c92482152a99d0a12335b97178c02d6f977d01",
    1: "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f",
    2: "00943ea859140fed74e1025fe41aedb38780eae5656b3f9ef9b4b0e6111350315544db3efcda05725108f72b2ab141f7",
}
PCR8 = hashlib.sha384(b"signing certificate").hexdigest()
ACCOUNT = "123456789012"
ROLE = f"arn:aws:iam::{ACCOUNT}:role/nitro-llm-enclave"
ADMIN = f"arn:aws:iam::{ACCOUNT}:role/KeyAdmin"
ALICE = f"arn:aws:iam::{ACCOUNT}:user/alice"
BOB = f"arn:aws:iam::{ACCOUNT}:role/bob"
DATA_ACTIONS = {"kms:Decrypt", "kms:Encrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom", "kms:ReEncryptTo"}


@pytest.fixture
def cli() -> typer.Typer:
    app = typer.Typer()
    deploy_cli.register(app)
    return app


def measurements_file(tmp_path: Path, pcrs: dict[int, str]) -> Path:
    path = tmp_path / "measurements.json"
    inner = {"HashAlgorithm": "Sha384 { ... }", **{f"PCR{i}": v for i, v in pcrs.items()}}
    path.write_text(json.dumps({"Measurements": inner}))
    return path


def run(cli, tmp_path, *extra: str, pcrs=REAL, clients=(ALICE, BOB)):
    args = ["kms-policy", "--measurements", str(measurements_file(tmp_path, pcrs)), "--account", ACCOUNT]
    args += ["--enclave-role", ROLE, "--admin", ADMIN]
    for c in clients:
        args += ["--client", c]
    return CliRunner().invoke(cli, args + list(extra), catch_exceptions=False)


def statements_for(policy: dict, principal: str) -> list[dict]:
    def names(s: dict) -> list[str]:
        p = s["Principal"]["AWS"]
        return p if isinstance(p, list) else [p]

    return [s for s in policy["Statement"] if principal in names(s)]


def actions(statement: dict) -> set[str]:
    a = statement["Action"]
    return set(a if isinstance(a, list) else [a])


def test_policy_is_valid_json_with_the_right_statements(cli, tmp_path):
    result = run(cli, tmp_path)
    assert result.exit_code == 0, result.output
    policy = json.loads(result.stdout)
    assert policy["Version"] == "2012-10-17"

    (admin,) = statements_for(policy, ADMIN)
    assert admin["Effect"] == "Allow"
    assert not actions(admin) & DATA_ACTIONS  # manages the key, cannot use it
    assert not any("*" in a for a in actions(admin))
    assert "kms:PutKeyPolicy" in actions(admin)

    for client in (ALICE, BOB):
        (stmt,) = statements_for(policy, client)
        assert stmt["Effect"] == "Allow"
        assert {"kms:GenerateDataKey", "kms:Decrypt"} <= actions(stmt)

    enclave = statements_for(policy, ROLE)
    allow = [s for s in enclave if s["Effect"] == "Allow"]
    deny = [s for s in enclave if s["Effect"] == "Deny"]
    assert len(allow) == 1 and actions(allow[0]) == {"kms:Decrypt"}
    conditions = allow[0]["Condition"]["StringEqualsIgnoreCase"]
    assert conditions == {f"kms:RecipientAttestation:PCR{i}": v for i, v in REAL.items()}
    assert len(deny) == 1 and "kms:Decrypt" in actions(deny[0])
    assert deny[0]["Condition"] == {"Null": {"kms:RecipientAttestation:PCR0": "true"}}


def test_signed_eif_pins_pcr8_too(cli, tmp_path):
    result = run(cli, tmp_path, pcrs={**REAL, 8: PCR8})
    assert result.exit_code == 0, result.output
    (allow,) = [s for s in statements_for(json.loads(result.stdout), ROLE) if s["Effect"] == "Allow"]
    assert allow["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR8"] == PCR8


def test_image_sha384_replaces_pcr0(cli, tmp_path):
    result = run(cli, tmp_path, "--image-sha384")
    assert result.exit_code == 0, result.output
    (allow,) = [s for s in statements_for(json.loads(result.stdout), ROLE) if s["Effect"] == "Allow"]
    conditions = allow["Condition"]["StringEqualsIgnoreCase"]
    assert conditions["kms:RecipientAttestation:ImageSha384"] == REAL[0]
    assert "kms:RecipientAttestation:PCR0" not in conditions
    assert conditions["kms:RecipientAttestation:PCR1"] == REAL[1]


def test_output_file(cli, tmp_path):
    out = tmp_path / "key-policy.json"
    result = run(cli, tmp_path, "--output", str(out))
    assert result.exit_code == 0
    assert result.stdout == ""
    assert json.loads(out.read_text())["Statement"]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pcrs": {**REAL, 0: "0" * 96}}, "debug"),
        ({"pcrs": {1: REAL[1], 2: REAL[2]}}, "PCR0"),
        ({"clients": ("alice",)}, "not an IAM ARN"),
    ],
)
def test_refusals_exit_2_with_a_reason(cli, tmp_path, kwargs, message):
    result = run(cli, tmp_path, **kwargs)
    assert result.exit_code == 2
    assert message in result.output
    assert result.stdout == ""  # nothing that could be piped into a stack as a policy


def test_bad_account(cli, tmp_path):
    args = ["kms-policy", "--measurements", str(measurements_file(tmp_path, REAL)), "--account", "12345"]
    args += ["--enclave-role", ROLE, "--admin", ADMIN, "--client", ALICE]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 2 and "12-digit" in result.output


# -- from the image manifest ('nitro-llm image build --blobs'), before any instance exists ----------


def manifest_file(tmp_path: Path, pcrs: dict[int, str] | None, name: str = "manifest.json") -> Path:
    """A manifest in the shape the image build writes (its EIF part from the writer's own class)."""
    from nitro_llm.image.manifest import EifOutput

    outputs: dict[str, object] = {
        "pcr2": (pcrs or REAL)[2],
        "rootfs_tar": {"file": "rootfs.tar", "size": 1, "sha256": "a" * 64},
        "ramdisk": {"file": "application.cpio", "size": 1, "sha256": "b" * 64},
    }
    if pcrs is not None:
        eif = EifOutput(
            "nitro-llm.eif", 10, None if 8 in pcrs else "c" * 64, pcrs[0], pcrs[1], pcrs[2], pcrs.get(8)
        )
        outputs["eif"] = eif.to_dict()
    manifest = {
        "format": 1,
        "entrypoint": {"entry": "nitro_llm.enclave.main", "cmd": ["/usr/bin/python3.11"], "env": {}},
        "outputs": outputs,
    }
    path = tmp_path / name
    path.write_text(json.dumps(manifest))
    return path


def run_manifest(cli, path: Path, *extra: str):
    args = ["kms-policy", "--manifest", str(path), "--account", ACCOUNT]
    args += ["--enclave-role", ROLE, "--admin", ADMIN, "--client", ALICE, "--client", BOB]
    return CliRunner().invoke(cli, args + list(extra), catch_exceptions=False)


def test_manifest_gives_the_same_policy_as_nitro_cli_measurements(cli, tmp_path):
    from_manifest = run_manifest(cli, manifest_file(tmp_path, REAL))
    assert from_manifest.exit_code == 0, from_manifest.output
    assert from_manifest.stdout == run(cli, tmp_path).stdout
    (allow,) = [s for s in statements_for(json.loads(from_manifest.stdout), ROLE) if s["Effect"] == "Allow"]
    assert allow["Condition"]["StringEqualsIgnoreCase"] == {
        f"kms:RecipientAttestation:PCR{i}": v for i, v in REAL.items()
    }


def test_signed_manifest_pins_pcr8(cli, tmp_path):
    result = run_manifest(cli, manifest_file(tmp_path, {**REAL, 8: PCR8}))
    assert result.exit_code == 0, result.output
    (allow,) = [s for s in statements_for(json.loads(result.stdout), ROLE) if s["Effect"] == "Allow"]
    assert allow["Condition"]["StringEqualsIgnoreCase"]["kms:RecipientAttestation:PCR8"] == PCR8


def test_manifest_of_a_build_without_blobs_is_refused(cli, tmp_path):
    result = run_manifest(cli, manifest_file(tmp_path, None))
    assert result.exit_code == 2
    assert "only PCR2" in result.output and "--blobs" in result.output
    assert result.stdout == ""


def test_manifest_with_a_debug_enclaves_zero_pcrs_is_refused(cli, tmp_path):
    result = run_manifest(cli, manifest_file(tmp_path, {0: "0" * 96, 1: "0" * 96, 2: REAL[2]}))
    assert result.exit_code == 2 and "debug" in result.output and result.stdout == ""


def test_at_least_one_source_of_pcrs(cli, tmp_path):
    base = ["kms-policy", "--account", ACCOUNT, "--enclave-role", ROLE, "--admin", ADMIN, "--client", ALICE]
    neither = CliRunner().invoke(cli, base)
    assert neither.exit_code == 2 and "--manifest" in neither.output and neither.stdout == ""


# -- a rolling update: the key policy accepts the old and the new image, each as a whole -----------

NEW = {0: hashlib.sha384(b"new image").hexdigest(), 1: REAL[1], 2: hashlib.sha384(b"new app").hexdigest()}


def enclave_allows(policy: dict) -> list[dict[str, str]]:
    return [
        s["Condition"]["StringEqualsIgnoreCase"]
        for s in statements_for(policy, ROLE)
        if s["Effect"] == "Allow"
    ]


def conditions(pcrs: dict[int, str]) -> dict[str, str]:
    return {f"kms:RecipientAttestation:PCR{i}": v for i, v in pcrs.items()}


def test_two_manifests_give_one_statement_per_image(cli, tmp_path):
    old = manifest_file(tmp_path, REAL, "old.json")
    new = manifest_file(tmp_path, NEW, "new.json")
    result = run_manifest(cli, old, "--manifest", str(new))
    assert result.exit_code == 0, result.output
    policy = json.loads(result.stdout)
    assert enclave_allows(policy) == [conditions(REAL), conditions(NEW)]
    (deny,) = [s for s in statements_for(policy, ROLE) if s["Effect"] == "Deny"]
    assert deny["Condition"] == {"Null": {"kms:RecipientAttestation:PCR0": "true"}}
    assert "narrow the policy" in result.stderr  # the operator is told the widening is temporary
    # Narrowing: the new manifest alone gives the usual one-image policy.
    narrowed = json.loads(run_manifest(cli, new).stdout)
    assert enclave_allows(narrowed) == [conditions(NEW)]


def test_rollout_policy_with_pcr8_and_image_sha384_per_image(cli, tmp_path):
    old = manifest_file(tmp_path, REAL, "old.json")
    new = manifest_file(tmp_path, {**NEW, 8: PCR8}, "new.json")
    result = run_manifest(cli, old, "--manifest", str(new), "--image-sha384")
    assert result.exit_code == 0, result.output
    first, second = enclave_allows(json.loads(result.stdout))
    assert first["kms:RecipientAttestation:ImageSha384"] == REAL[0]
    assert second["kms:RecipientAttestation:ImageSha384"] == NEW[0]
    assert second["kms:RecipientAttestation:PCR8"] == PCR8 and "kms:RecipientAttestation:PCR8" not in first
    assert not any("kms:RecipientAttestation:PCR0" in c for c in (first, second))


def test_a_nitro_cli_build_and_a_manifest_may_be_combined(cli, tmp_path):
    """Moving from the nitro-cli route (its measurements) to the reproducible one (a manifest)."""
    result = run(cli, tmp_path, "--manifest", str(manifest_file(tmp_path, NEW)))
    assert result.exit_code == 0, result.output
    assert enclave_allows(json.loads(result.stdout)) == [conditions(NEW), conditions(REAL)]


def test_a_rollout_policy_fits_the_stack_parameter(cli, tmp_path):
    old = manifest_file(tmp_path, {**REAL, 8: PCR8}, "old.json")
    new = manifest_file(tmp_path, {**NEW, 8: PCR8}, "new.json")
    clients = [f"arn:aws:iam::{ACCOUNT}:user/client-{i}" for i in range(3)]
    args = ["kms-policy", "--manifest", str(old), "--manifest", str(new), "--account", ACCOUNT, "--compact"]
    args += ["--enclave-role", ROLE, "--admin", ADMIN] + [a for c in clients for a in ("--client", c)]
    result = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().encode()) <= deploy_cli.CFN_PARAMETER_LIMIT
    assert "warning" not in result.output
    assert len(enclave_allows(json.loads(result.stdout))) == 2


def test_a_debug_manifest_among_several_is_refused(cli, tmp_path):
    debug = manifest_file(tmp_path, {0: "0" * 96, 1: "0" * 96, 2: NEW[2]}, "debug.json")
    new = manifest_file(tmp_path, NEW, "new.json")
    result = run_manifest(cli, debug, "--manifest", str(new))
    assert result.exit_code == 2 and "debug" in result.output and result.stdout == ""
