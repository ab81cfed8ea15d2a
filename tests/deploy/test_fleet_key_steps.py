"""The fleet KMS key's policy through a fleet's life, in the KMS emulator: created before the image
(nobody opens a fleet key), widened to the image, to the old and new images of a rolling update and
narrowed again; and deploy/README.md's fleet key steps run in bash as written, with the real
``nitro-llm`` and stand-ins of the AWS CLI whose KMS calls go to the emulator, so a README that drifts
from the commands fails here.

What a policy allows is decided by the emulator's own evaluation of an attestation document signed by
the emulated NSM with the PCRs under test, as KMS would for a real enclave.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import image_standin
import pytest
import standins
import typer
from cryptography.hazmat.primitives.asymmetric import rsa
from typer.testing import CliRunner

from nitro_llm.cli import fleet_key as fleet_key_cli
from nitro_llm.fleet import operator
from nitro_llm.fleet.key_file import FleetKeyFile, FleetKeyGeneration
from nitro_llm.image.manifest import read_manifest
from nitro_llm.kms.client import make_kms_client
from nitro_llm_dev.kms_emulator import EmulatorConfig, EmulatorServer
from nitro_llm_dev.nsm.devca import DevCA

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "kms"))
from kms_testing import attest

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"
KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)  # the enclave's ephemeral key


class Kms:
    def __init__(self, server: EmulatorServer, state: Path, ca: DevCA) -> None:
        self.url, self.ca = server.url, ca
        self.credentials: dict[str, Any] = json.loads((state / "credentials.json").read_text())

    def client(self, who: str) -> Any:
        return make_kms_client(self.url, self.credentials[who], REGION)

    def opens(self, generation: FleetKeyGeneration, pcrs: dict[int, str]) -> bool:
        """Whether an attested enclave with these PCRs obtains this fleet key generation."""
        role = self.client("enclave_role")
        document = attest(self.ca, {i: bytes.fromhex(v) for i, v in pcrs.items()}, KEY)
        try:
            role.decrypt(
                CiphertextBlob=generation.wrapped,
                EncryptionContext=generation.encryption_context(),
                Recipient={
                    "KeyEncryptionAlgorithm": "RSAES_OAEP_SHA_256",
                    "AttestationDocument": document,
                },
            )
        except role.exceptions.ClientError as exc:
            assert exc.response["Error"]["Code"] == "AccessDeniedException"
            return False
        return True


@pytest.fixture(scope="module")
def kms(tmp_path_factory):
    root = tmp_path_factory.mktemp("fleet-kms")
    ca = DevCA.load_or_create(root / "dev-ca")
    config = EmulatorConfig(state_dir=root / "kms", region=REGION, trust_roots=[ca.root_certificate])
    with EmulatorServer(config).start() as server:
        yield Kms(server, config.state_dir, ca)


def policy(kms: Kms, *args: str) -> str:
    app = typer.Typer()
    fleet_key_cli.register(app)
    creds = kms.credentials
    base = ["fleet-key", "policy", "--account", creds["account"], "--admin", creds["admin"]["arn"]]
    result = CliRunner().invoke(app, [*base, "--enclave-role", creds["enclave_role"]["arn"], *args])
    assert result.exit_code == 0, result.output
    return result.stdout


def test_the_policy_widens_to_old_and_new_images_never_a_mix_then_narrows(kms, tmp_path):
    admin = kms.client("admin")
    arn = admin.create_key(Policy=policy(kms, "--before-image"))["KeyMetadata"]["Arn"]
    keys = operator.create(tmp_path / "fleet-key.json", admin, arn)  # its creator may, before any image
    blobs = image_standin.write_blobs(tmp_path / "blobs")
    fleet = ("--region", REGION, "--fleet-kms-key", arn)
    manifests = {
        name: image_standin.build(tmp_path / name, blobs, *fleet, *extra)[1]
        for name, extra in (("old", ()), ("new", ("--ctx", "4096")))
    }
    old, new = (read_manifest(manifests[n]).pcrs() for n in ("old", "new"))
    assert old[0] != new[0] and old[2] != new[2]
    assert not kms.opens(keys.current, old)  # before the image: no enclave at all

    def put(*args: str) -> None:
        admin.put_key_policy(KeyId=arn, PolicyName="default", Policy=policy(kms, *args))

    put("--manifest", str(manifests["old"]), "--manifest", str(manifests["new"]))
    assert kms.opens(keys.current, old) and kms.opens(keys.current, new)
    assert not kms.opens(keys.current, {**old, 2: new[2]})  # a mix of the two builds
    assert not kms.opens(keys.current, {**new, 0: old[0]})
    put("--manifest", str(manifests["new"]))
    assert kms.opens(keys.current, new) and not kms.opens(keys.current, old)


# -- deploy/README.md: the fleet key's steps, as written ----------------------------------------------

README = (REPO / "deploy" / "README.md").read_text()
SHELL_BLOCKS = re.findall(r"^```shell\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)


def block(command: str) -> str:
    (found,) = [b for b in SHELL_BLOCKS if command in b]
    return found


def run_bash(script: str, cwd: Path, env: dict[str, str]) -> None:
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", script],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]


def test_the_readme_fleet_key_steps_run_and_do_what_they_say(kms, tmp_path):
    creds = kms.credentials
    state, laptop = tmp_path / "state", tmp_path / "laptop"
    laptop.mkdir()
    bin_dir = standins.install(state / "bin", ["aws", "nitro-llm"])
    (state / "s3" / "nitro-llm-images").mkdir(parents=True)  # step 2's bucket
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": str(laptop),
        "NO_PROXY": "*",
        "STANDIN_STATE": str(state),
        "STANDIN_LOG": str(state / "calls.log"),
        # What step 0 defined, and the operator's credentials (the admin), against the emulator.
        "ACCOUNT": creds["account"],
        "ADMIN_ARN": creds["admin"]["arn"],
        "AWS_REGION": REGION,
        "AWS_ACCESS_KEY_ID": creds["admin"]["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": creds["admin"]["secret_access_key"],
        "AWS_ENDPOINT_URL_KMS": kms.url,
        "BLOBS": str(image_standin.write_blobs(tmp_path / "blobs")),
        "BUCKET": "nitro-llm-images",
        "REF": "0123456789abcdef0123456789abcdef01234567",
    }
    first = block("nitro-llm fleet-key create")
    role_line = "FLEET_ROLE_ARN=arn:aws:iam::$ACCOUNT:role/nitro-llm-fleet-enclave\n"
    assert first.count(role_line) == 1  # the stack's role name; the emulator has its own
    first = first.replace(role_line, f"FLEET_ROLE_ARN={creds['enclave_role']['arn']}\n")
    keep = "\ndeclare -p FLEET_ROLE_ARN FLEET_KEY_BUCKET FLEET_KMS_KEY > vars.sh\n"
    run_bash(first + keep, laptop, env)

    local = FleetKeyFile.load(laptop / "fleet-key.json")
    uploaded = state / "s3" / f"nitro-llm-fleet-key-{creds['account']}" / "fleet-key.json"
    assert uploaded.read_bytes() == (laptop / "fleet-key.json").read_bytes()
    manifest = read_manifest(laptop / "build" / "image" / "manifest.json")
    assert manifest.fleet_kms_key == local.kms_key_arn  # the image is measured with the key's ARN
    assert (state / "s3" / "nitro-llm-images" / env["REF"] / "manifest.json").is_file()  # published
    pcrs = manifest.pcrs()
    assert kms.opens(local.current, pcrs)  # an enclave of the built image obtains the fleet key
    assert not kms.opens(local.current, {**pcrs, 2: "ee" * 48})  # one of other PCRs does not

    rotation = block("nitro-llm fleet-key rotate") + block("nitro-llm fleet-key retire")
    run_bash("source vars.sh\n" + rotation, laptop, env)
    after = FleetKeyFile.load(uploaded)
    assert after.current.generation == 2 and after.previous is None
    assert (laptop / "fleet-key-retired.txt").read_text() == f"{local.current.id}\n"
    assert kms.opens(after.current, pcrs)
    assert not kms.opens(local.current, pcrs)  # retired: refused even to the pinned image
