"""The CloudFormation template: cfn-lint clean, only the gateway port open, an enclave-enabled
IMDSv2-only instance, the key policy as a parameter, and a UserData script that is valid shell,
passes shellcheck and writes a deployment config our commands accept."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest
import typer
from cfn_testing import (
    REPO,
    STACK_VALUES,
    TEMPLATES,
    load_template,
    run_cfn_lint,
    run_checkov,
    substitute,
)
from typer.testing import CliRunner

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm.deploy import host_files
from nitro_llm.deploy.config import DeployConfig

TEMPLATE = TEMPLATES / "nitro-llm.yaml"
TEMPLATE_DATA = load_template(TEMPLATE)
RESOURCES = TEMPLATE_DATA["Resources"]
PARAMETERS = TEMPLATE_DATA["Parameters"]


def test_cfn_lint_reports_nothing():
    done = run_cfn_lint(TEMPLATE)
    assert done.returncode == 0, done.stdout + done.stderr


def test_cfn_lint_catches_a_broken_template(tmp_path):
    """The lint test above can fail: the same linter rejects a template with a wrong property."""
    broken = tmp_path / "broken.yaml"
    broken.write_text(TEMPLATE.read_text().replace("EnclaveOptions:", "EnclaveOption:"))
    done = run_cfn_lint(broken)
    assert done.returncode & 2, done.stdout


def test_instance_is_enclave_enabled_imdsv2_only_al2023():
    props = RESOURCES["ParentInstance"]["Properties"]
    assert props["EnclaveOptions"] == {"Enabled": True}
    assert props["MetadataOptions"]["HttpTokens"] == "required"
    assert props["IamInstanceProfile"] == {"Ref": "EnclaveInstanceProfile"}
    assert "KeyName" not in props  # no SSH key: admin access goes through SSM
    assert props["ImageId"] == {"Fn::If": ["HasPinnedImage", {"Ref": "PinnedImageId"}, {"Ref": "ImageId"}]}
    image = PARAMETERS["ImageId"]
    assert image["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert image["Default"].startswith("/aws/service/ami-amazon-linux-latest/al2023-ami")
    itype = PARAMETERS["InstanceType"]
    assert itype["Default"] in itype["AllowedValues"]
    # Nitro Enclaves need >= 4 vCPUs and exclude burstable (t*) types.
    assert not any(t.startswith("t") or t.endswith(".large") for t in itype["AllowedValues"])


def test_security_group_opens_only_the_gateway_port_from_the_cidr():
    props = RESOURCES["GatewaySecurityGroup"]["Properties"]
    (rule,) = props["SecurityGroupIngress"]
    assert rule["FromPort"] == rule["ToPort"] == {"Ref": "GatewayPort"}
    assert rule["CidrIp"] == {"Ref": "GatewayCidr"}
    assert rule["IpProtocol"] == "tcp"
    (egress,) = props["SecurityGroupEgress"]
    assert egress["FromPort"] == egress["ToPort"] == 443
    assert "Default" not in PARAMETERS["GatewayCidr"]  # the operator must choose who may connect


def test_key_and_alias_take_the_generated_policy_as_a_parameter():
    key = RESOURCES["DataKey"]
    assert key["Type"] == "AWS::KMS::Key"
    assert key["Properties"]["KeyPolicy"] == {"Ref": "KeyPolicy"}
    assert key["Condition"] == "HasKeyPolicy"
    assert key["DependsOn"] == "EnclaveRole"  # the policy names the role: it must exist first
    assert PARAMETERS["KeyPolicy"]["Type"] == "String"
    alias = RESOURCES["DataKeyAlias"]
    assert alias["Properties"]["TargetKeyId"] == {"Ref": "DataKey"}
    role = RESOURCES["EnclaveRole"]["Properties"]
    assert role["RoleName"] == {"Ref": "EnclaveRoleName"}
    (statement,) = role["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "ec2.amazonaws.com"}
    # No IAM grant on KMS (only the key policy decides); S3 reads of the published images only.
    (policy,) = role["Policies"]
    (grant,) = policy["PolicyDocument"]["Statement"]
    assert grant == {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ImageBucket}/*"},
    }


def test_generated_policy_fits_the_parameter(tmp_path):
    import hashlib

    measurements = tmp_path / "m.json"
    pcrs = {f"PCR{i}": hashlib.sha384(bytes([i])).hexdigest() for i in (0, 1, 2, 8)}
    measurements.write_text(json.dumps({"Measurements": {"HashAlgorithm": "Sha384 { ... }", **pcrs}}))
    app = typer.Typer()
    deploy_cli.register(app)
    acct = "123456789012"
    args = ["kms-policy", "--measurements", str(measurements), "--account", acct, "--compact"]
    args += [
        "--enclave-role",
        f"arn:aws:iam::{acct}:role/nitro-llm-enclave",
        "--admin",
        f"arn:aws:iam::{acct}:role/A",
    ]
    for i in range(5):
        args += ["--client", f"arn:aws:iam::{acct}:user/client-{i}"]
    result = CliRunner().invoke(app, args, catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert len(result.stdout.strip().splitlines()) == 1
    assert len(result.stdout.strip().encode()) <= deploy_cli.CFN_PARAMETER_LIMIT
    assert "warning" not in result.output


def _user_data() -> str:
    sub = RESOURCES["ParentInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    return substitute(sub, STACK_VALUES, TEMPLATE_DATA)


def test_user_data_is_valid_bash():
    done = subprocess.run(["bash", "-n"], input=_user_data(), capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(
    shutil.which("shellcheck") is None, reason="shellcheck not installed (apt-get install shellcheck)"
)
def test_user_data_passes_shellcheck():
    done = subprocess.run(
        ["shellcheck", "-s", "bash", "-"], input=_user_data(), capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


def test_user_data_config_is_accepted_and_units_match(tmp_path):
    script = _user_data()
    match = re.search(r"cat > /etc/nitro-llm/deploy.toml <<'EOF'\n(.*?)\nEOF\n", script, re.DOTALL)
    assert match, "the bootstrap must write /etc/nitro-llm/deploy.toml"
    cfg = DeployConfig.from_mapping(tomllib.loads(match.group(1)), Path("/etc/nitro-llm"))
    assert cfg.region == "eu-west-1"
    assert (cfg.enclave.cpu_count, cfg.enclave.memory_mib, cfg.gateway.port) == (2, 4096, 8080)
    assert cfg.path(cfg.enclave.eif) == Path("/opt/nitro-llm/build/nitro-llm.eif")
    assert cfg.path(cfg.enclave.manifest) == Path("/opt/nitro-llm/build/manifest.json")
    for unit in (host_files.VSOCK_PROXY_UNIT, host_files.GATEWAY_UNIT, host_files.ENCLAVE_UNIT):
        assert unit in script
    assert f"disable --now {host_files.STOCK_VSOCK_PROXY_UNIT}" in script
    for command in ("deploy allocator", "deploy systemd"):
        assert f"nitro-llm {command} --config /etc/nitro-llm/deploy.toml" in script
    assert f"useradd --system --shell /sbin/nologin {cfg.gateway.user}" in script  # the units' user


def test_checkov_finds_nothing_unexplained(tmp_path):
    """Every checkov finding is fixed, or skipped in the template's metadata with its reason (and
    explained in deploy/README.md); none is silently ignored."""
    report = run_checkov(TEMPLATE)
    summary = report["summary"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and summary["parsing_errors"] == 0, failed
    assert summary["resource_count"] >= 8 and summary["passed"] >= 15  # it really read the template
    readme = (REPO / "deploy" / "README.md").read_text()
    for skipped in report["results"]["skipped_checks"]:
        assert skipped["check_id"] in readme, f"{skipped['check_id']} is skipped but not explained"


def test_checkov_catches_an_insecure_change(tmp_path):
    """The check above can fail: SSH open to the world and key rotation off are both reported."""
    text = TEMPLATE.read_text().replace("EnableKeyRotation: true", "EnableKeyRotation: false")
    text = text.replace(
        "      SecurityGroupEgress:\n",
        "        - Description: ssh\n          IpProtocol: tcp\n          FromPort: 22\n"
        "          ToPort: 22\n          CidrIp: 0.0.0.0/0\n      SecurityGroupEgress:\n",
        1,
    )
    broken = tmp_path / "insecure.yaml"
    broken.write_text(text)
    failed = {c["check_id"] for c in run_checkov(broken)["results"]["failed_checks"]}
    assert {"CKV_AWS_7", "CKV_AWS_24"} <= failed, failed
