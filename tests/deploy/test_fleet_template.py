"""The fleet template (deploy/cloudformation/nitro-llm-fleet.yaml): cfn-lint and checkov clean, an
Auto Scaling group of enclave-enabled IMDSv2-only instances across subnets behind an NLB (TLS
listener, TLS to the gateways, /healthz health checks, replacement on failed health, one-at-a-time
rolling updates that wait for each new enclave), least-privilege S3 reads (the image's two objects and
the wrapped fleet key), and a bootstrap that is the single-instance stack's, step for step."""

from __future__ import annotations

import difflib
import re
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any

import pytest
from cfn_testing import (
    REPO,
    STACK_VALUES,
    TEMPLATES,
    cfn_lint,
    load_template,
    parse_cli,
    run_checkov,
    shell_commands,
    substitute,
)

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm.deploy.config import DeployConfig

FLEET = TEMPLATES / "nitro-llm-fleet.yaml"
SINGLE = TEMPLATES / "nitro-llm.yaml"
T = load_template(FLEET)
RESOURCES, PARAMETERS = T["Resources"], T["Parameters"]


def props(name: str) -> dict[str, Any]:
    return RESOURCES[name]["Properties"]


# -- the linters: one run each over the template and a broken copy --------------------------------

BROKEN = {  # (what is changed, what the linter must then report)
    "broken.yaml": [("EnclaveOptions:", "EnclaveOption:")],
    "insecure.yaml": [
        ("HttpTokens: required", "HttpTokens: optional"),  # IMDSv1 back on: CKV_AWS_79
        ("ELBSecurityPolicy-TLS13-1-2-2021-06", "ELBSecurityPolicy-2016-08"),  # TLS 1.0: CKV_AWS_103
        (
            'Key: access_logs.s3.enabled\n          Value: "true"',
            'Key: access_logs.s3.enabled\n          Value: "false"',
        ),
    ],
}


@pytest.fixture(scope="module")
def copies(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("fleet-templates")
    paths = {"fleet.yaml": folder / "fleet.yaml"}
    shutil.copy(FLEET, paths["fleet.yaml"])
    for name, edits in BROKEN.items():
        text = FLEET.read_text()
        for old, new in edits:
            assert old in text, old
            text = text.replace(old, new)
        paths[name] = folder / name
        paths[name].write_text(text)
    return paths


@pytest.fixture(scope="module")
def lint(copies) -> dict[str, list[dict[str, Any]]]:
    """cfn-lint's findings per file (one run over all copies)."""
    import json

    done = subprocess.run(
        [cfn_lint(), "--format", "json", *map(str, copies.values())],
        capture_output=True,
        text=True,
        timeout=300,
    )
    findings: dict[str, list[dict[str, Any]]] = {name: [] for name in copies}
    for match in json.loads(done.stdout or "[]"):
        findings[Path(match["Filename"]).name].append(match)
    return findings


@pytest.fixture(scope="module")
def checkov_report(copies) -> dict[str, Any]:
    """checkov's report per file: one run over the template and its insecure copy."""
    (copies["broken.yaml"]).unlink()  # cfn-lint's business; checkov would count it as a parsing error
    report = run_checkov(copies["fleet.yaml"].parent)
    reports: dict[str, Any] = {}
    for name in ("fleet.yaml", "insecure.yaml"):
        results = {
            kind: [c for c in report["results"][kind] if Path(c["file_path"]).name == name]
            for kind in ("passed_checks", "failed_checks", "skipped_checks")
        }
        reports[name] = {"results": results, "summary": report["summary"]}
    return reports


def test_cfn_lint_reports_nothing(lint):
    assert lint["fleet.yaml"] == [], lint["fleet.yaml"]


def test_cfn_lint_catches_a_broken_template(lint):
    assert any(m["Level"] == "Error" for m in lint["broken.yaml"]), lint["broken.yaml"]


def test_checkov_finds_nothing_unexplained(checkov_report):
    report = checkov_report["fleet.yaml"]
    failed = [(c["check_id"], c["resource"], c["check_name"]) for c in report["results"]["failed_checks"]]
    assert failed == [] and report["summary"]["parsing_errors"] == 0, failed
    assert len(report["results"]["passed_checks"]) >= 25  # it really read the template
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV_AWS_79", "CKV_AWS_91", "CKV_AWS_103", "CKV_AWS_2"} <= passed  # LT, NLB and listener read
    readme = (REPO / "deploy" / "README.md").read_text()
    for skipped in report["results"]["skipped_checks"]:
        assert skipped["check_id"] in readme, f"{skipped['check_id']} is skipped but not explained"


def test_checkov_catches_an_insecure_change(checkov_report):
    failed = {c["check_id"] for c in checkov_report["insecure.yaml"]["results"]["failed_checks"]}
    assert {"CKV_AWS_79", "CKV_AWS_103", "CKV_AWS_91"} <= failed, failed


# -- what the fleet is made of -----------------------------------------------------------------


def test_launch_template_is_enclave_enabled_imdsv2_only_without_ssh():
    data = props("LaunchTemplate")["LaunchTemplateData"]
    assert data["EnclaveOptions"] == {"Enabled": True}
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["MetadataOptions"]["HttpPutResponseHopLimit"] == 1
    assert data["IamInstanceProfile"] == {"Arn": {"Fn::GetAtt": ["EnclaveInstanceProfile", "Arn"]}}
    assert data["SecurityGroupIds"] == [{"Ref": "InstanceSecurityGroup"}]
    assert "KeyName" not in data and "NetworkInterfaces" not in data
    assert all(m["Ebs"]["Encrypted"] for m in data["BlockDeviceMappings"])
    assert (
        PARAMETERS["InstanceType"]["AllowedValues"]
        == load_template(SINGLE)["Parameters"]["InstanceType"]["AllowedValues"]
    )


def test_group_spans_subnets_behind_the_target_group_and_replaces_unhealthy_instances():
    group = props("FleetGroup")
    assert group["VPCZoneIdentifier"] == {"Ref": "InstanceSubnetIds"}
    assert PARAMETERS["InstanceSubnetIds"]["Type"] == "List<AWS::EC2::Subnet::Id>"
    assert group["LaunchTemplate"] == {
        "LaunchTemplateId": {"Ref": "LaunchTemplate"},
        "Version": {"Fn::GetAtt": ["LaunchTemplate", "LatestVersionNumber"]},  # a new version rolls
    }
    assert group["TargetGroupARNs"] == [{"Ref": "GatewayTargetGroup"}]
    assert group["HealthCheckType"] == "ELB"  # the target group's /healthz decides, not only EC2
    assert group["HealthCheckGracePeriod"] >= 600  # the first boot installs and starts everything


def test_rolling_update_one_at_a_time_waiting_for_each_enclave():
    fleet = RESOURCES["FleetGroup"]
    rolling = fleet["UpdatePolicy"]["AutoScalingRollingUpdate"]
    assert rolling["MaxBatchSize"] == 1
    assert rolling["MinInstancesInService"] == {"Ref": "MinInstancesInService"}
    assert rolling["WaitOnResourceSignals"] is True
    assert {"HealthCheck", "ReplaceUnhealthy", "AZRebalance"} <= set(rolling["SuspendProcesses"])
    creation = fleet["CreationPolicy"]
    assert creation["ResourceSignal"]["Count"] == {"Ref": "DesiredCapacity"}
    # The instances signal this resource, and only once the enclave answers (see the UserData tests).
    assert "--resource FleetGroup" in fleet_user_data()


def test_target_group_checks_the_gateways_healthz_over_tls():
    tg = props("GatewayTargetGroup")
    assert (tg["Protocol"], tg["Port"], tg["TargetType"]) == ("TLS", {"Ref": "GatewayPort"}, "instance")
    assert (tg["HealthCheckProtocol"], tg["HealthCheckPath"], tg["HealthCheckPort"]) == (
        "HTTPS",
        "/healthz",
        "traffic-port",
    )
    assert tg["Matcher"] == {"HttpCode": "200"}  # the gateway answers 503 while its enclave is down
    delay = {a["Key"]: a["Value"] for a in tg["TargetGroupAttributes"]}[
        "deregistration_delay.timeout_seconds"
    ]
    assert int(delay) >= 60  # streamed answers finish on a replaced instance


def test_nlb_terminates_tls_with_a_modern_policy_and_forwards_to_the_gateways():
    lb = props("LoadBalancer")
    assert lb["Type"] == "network" and lb["Subnets"] == {"Ref": "LoadBalancerSubnetIds"}
    assert lb["SecurityGroups"] == [{"Ref": "LoadBalancerSecurityGroup"}]
    listener = props("TlsListener")
    assert listener["Protocol"] == "TLS" and listener["Port"] == {"Ref": "ListenerPort"}
    assert listener["Certificates"] == [{"CertificateArn": {"Ref": "CertificateArn"}}]
    assert listener["SslPolicy"].startswith("ELBSecurityPolicy-TLS13")
    assert listener["DefaultActions"] == [
        {"Type": "forward", "TargetGroupArn": {"Ref": "GatewayTargetGroup"}}
    ]


def test_only_the_listener_is_open_and_the_gateways_only_to_the_load_balancer():
    lb_sg = props("LoadBalancerSecurityGroup")
    (ingress,) = lb_sg["SecurityGroupIngress"]
    assert ingress["CidrIp"] == {"Ref": "ClientCidr"} and "Default" not in PARAMETERS["ClientCidr"]
    assert ingress["FromPort"] == ingress["ToPort"] == {"Ref": "ListenerPort"}
    (egress,) = lb_sg["SecurityGroupEgress"]
    assert egress["DestinationSecurityGroupId"] == {"Ref": "InstanceSecurityGroup"}
    assert egress["FromPort"] == egress["ToPort"] == {"Ref": "GatewayPort"}
    instance_sg = props("InstanceSecurityGroup")
    assert "SecurityGroupIngress" not in instance_sg  # its one ingress rule is GatewayFromLoadBalancer
    ingress_rules = [r for r in RESOURCES.values() if r["Type"] == "AWS::EC2::SecurityGroupIngress"]
    assert [r["Properties"] for r in ingress_rules] == [props("GatewayFromLoadBalancer")]
    rule = props("GatewayFromLoadBalancer")
    assert rule["GroupId"] == {"Ref": "InstanceSecurityGroup"}
    assert rule["SourceSecurityGroupId"] == {"Ref": "LoadBalancerSecurityGroup"}
    assert rule["FromPort"] == rule["ToPort"] == {"Ref": "GatewayPort"}
    (out,) = instance_sg["SecurityGroupEgress"]
    assert out["FromPort"] == out["ToPort"] == 443


def test_role_reads_the_image_and_the_wrapped_fleet_key_and_nothing_else():
    role = props("EnclaveRole")
    image_policy, fleet_key_policy = role["Policies"]
    (image,) = image_policy["PolicyDocument"]["Statement"]
    assert image["Action"] == "s3:GetObject"
    assert image["Resource"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ImageBucket}/${ImagePrefix}/nitro-llm.eif"},
        {"Fn::Sub": "arn:${AWS::Partition}:s3:::${ImageBucket}/${ImagePrefix}/manifest.json"},
    ]
    condition, granted, otherwise = fleet_key_policy["Fn::If"]
    assert condition == "HasFleetKey" and otherwise == {"Ref": "AWS::NoValue"}
    (key,) = granted["PolicyDocument"]["Statement"]
    assert key == {
        "Effect": "Allow",
        "Action": "s3:GetObject",
        "Resource": {"Fn::Sub": "arn:${AWS::Partition}:s3:::${FleetKeyBucket}/${FleetKeyObject}"},
    }
    assert "*" not in PARAMETERS["FleetKeyObject"]["Default"]
    assert not any("kms:" in str(p) for p in role["Policies"])  # the key policy alone decides


def test_key_takes_the_generated_policy():
    key = RESOURCES["DataKey"]
    assert key["Properties"]["KeyPolicy"] == {"Ref": "KeyPolicy"}
    assert key["DependsOn"] == "EnclaveRole" and key["DeletionPolicy"] == "Retain"
    assert key["Properties"]["EnableKeyRotation"] is True


# -- the bootstrap: the single-instance stack's, with declared differences only -------------------

VALUES = {
    **STACK_VALUES,
    "FleetKeyBucket": "nitro-llm-fleet-key-123456789012",
    "FleetKeyObject": "fleet-key.json",
    "FleetKmsKeyArn": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
}


def fleet_user_data() -> str:
    sub = props("LaunchTemplate")["LaunchTemplateData"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    return substitute(sub, VALUES, T)


def single_user_data() -> str:
    single = load_template(SINGLE)
    sub = single["Resources"]["ParentInstance"]["Properties"]["UserData"]["Fn::Base64"]["Fn::Sub"]
    return substitute(sub, VALUES, single)


SIGNAL = (
    "signal() { /opt/aws/bin/cfn-signal --exit-code \"$1\" --stack 'nitro-llm' --resource {} "
    "--region 'eu-west-1' || true; }"
)
ONLY_IN_SINGLE = [
    SIGNAL.replace("{}", "ParentInstance"),
    "nitro-llm deploy gateway-files --config /etc/nitro-llm/deploy.toml --address '203.0.113.7'",
]
ONLY_IN_FLEET = [
    SIGNAL.replace("{}", "FleetGroup"),
    "# A fleet replica: its image is measured with FleetKmsKeyArn (install-eif checks that), its gateway",
    "# hands the enclave the wrapped fleet key file, and a timer fetches that file again (rotations).",
    "fleet_key_bucket='nitro-llm-fleet-key-123456789012'",
    'if [ -n "$fleet_key_bucket" ]; then',
    "  cat >> /etc/nitro-llm/deploy.toml <<'EOF'",
    "",
    "[fleet]",
    f'kms_key_arn = "{VALUES["FleetKmsKeyArn"]}"',
    'key_file = "/etc/nitro-llm/fleet-key.json"',
    'source = "s3://nitro-llm-fleet-key-123456789012/fleet-key.json"',
    "EOF",
    "fi",
    "# The wrapped fleet key: KMS ciphertext only; KMS releases the key inside it to attested enclaves.",
    'if [ -n "$fleet_key_bucket" ]; then',
    "  nitro-llm deploy fetch-fleet-key --config /etc/nitro-llm/deploy.toml",
    "fi",
    "",
    # The NLB does not check the gateways' certificates (it holds the clients' one): no address to name.
    "nitro-llm deploy gateway-files --config /etc/nitro-llm/deploy.toml",
    "# A rolling update moves on only when this replica's enclave answers through its gateway.",
    "nitro-llm deploy wait-healthy --config /etc/nitro-llm/deploy.toml --timeout 900",
]


def test_bootstrap_is_the_single_instance_one_with_declared_differences_only():
    """Reuse, not a fork: a step changed in one template and not the other fails here."""
    diff = list(difflib.ndiff(single_user_data().splitlines(), fleet_user_data().splitlines()))
    removed = [line[2:] for line in diff if line.startswith("- ")]
    added = [line[2:] for line in diff if line.startswith("+ ")]
    assert removed == ONLY_IN_SINGLE
    assert added == ONLY_IN_FLEET


def test_bootstrap_signals_only_after_the_enclave_answers():
    lines = [line.strip() for line in fleet_user_data().splitlines()]
    started = next(i for i, line in enumerate(lines) if line.startswith("systemctl enable --now nitro-llm-"))
    waited = next(i for i, line in enumerate(lines) if line.startswith("nitro-llm deploy wait-healthy"))
    assert started < waited < lines.index("signal 0") == len(lines) - 1
    # A wait that times out exits 1: 'set -e' and the ERR trap signal the failure, and the update rolls back.
    assert lines.index("set -euo pipefail") < lines.index("trap 'signal 1' ERR") < waited


def test_bootstrap_is_valid_bash_and_passes_shellcheck():
    script = fleet_user_data()
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck not installed (apt-get install shellcheck)")
    done = subprocess.run(
        ["shellcheck", "-s", "bash", "-"], input=script, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stdout


def bootstrap_config(script: str, *, fleet: bool) -> DeployConfig:
    """The deploy.toml the bootstrap writes: its heredoc, and the [fleet] section appended with a bucket."""
    toml = script.split("cat > /etc/nitro-llm/deploy.toml <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    if fleet:
        toml += script.split("cat >> /etc/nitro-llm/deploy.toml <<'EOF'\n", 1)[1].split("\nEOF\n", 1)[0]
    return DeployConfig.from_mapping(tomllib.loads(toml), Path("/etc/nitro-llm"))


def test_bootstrap_commands_parse_and_the_config_is_accepted():
    script = fleet_user_data()
    commands = [parse_cli(argv, deploy_cli.register)[0] for argv in shell_commands(script, "nitro-llm")]
    assert commands == [
        "install-eif",
        "fetch-fleet-key",
        "gateway-files",
        "allocator",
        "systemd",
        "wait-healthy",
    ]
    cfg = bootstrap_config(script, fleet=True)
    assert (cfg.enclave.cpu_count, cfg.enclave.memory_mib, cfg.gateway.port) == (2, 4096, 8080)
    assert cfg.fleet is not None and cfg.fleet.kms_key_arn == VALUES["FleetKmsKeyArn"]
    # The wrapped fleet key it downloads is the one object the role may read, from the first boot on.
    assert cfg.fleet.source == "s3://nitro-llm-fleet-key-123456789012/fleet-key.json"
    assert [argv for argv in shell_commands(script, "aws") if "fleet-key" in " ".join(argv)] == []
    assert bootstrap_config(script, fleet=False).fleet is None  # no bucket: no [fleet] appended


def test_a_fleet_replicas_units_pass_the_key_file_and_refresh_it():
    """What 'deploy systemd' renders from the bootstrap's config: the gateway gets --fleet-key-file and
    pulls in the timer that runs 'deploy fetch-fleet-key' (a rotation uploaded to S3 reaches it)."""
    from nitro_llm.deploy import host_files

    cfg = bootstrap_config(fleet_user_data(), fleet=True)
    files = host_files.render_systemd(cfg, Path("/etc/nitro-llm/deploy.toml"))
    gateway = files[host_files.SYSTEMD_DIR / host_files.GATEWAY_UNIT]
    assert "--fleet-key-file /etc/nitro-llm/fleet-key.json" in gateway
    assert f"Wants=network-online.target {host_files.FLEET_KEY_TIMER}" in gateway
    service = files[host_files.SYSTEMD_DIR / host_files.FLEET_KEY_UNIT]
    assert "ExecStart=/opt/nitro-llm/venv/bin/nitro-llm deploy fetch-fleet-key --config" in service
    assert "OnUnitActiveSec=300" in files[host_files.SYSTEMD_DIR / host_files.FLEET_KEY_TIMER]


def test_a_fleet_key_bucket_needs_the_fleet_kms_key():
    (rule,) = T["Rules"].values()
    assert rule["RuleCondition"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "FleetKeyBucket"}, ""]}]}
    (assertion,) = rule["Assertions"]
    assert assertion["Assert"] == {"Fn::Not": [{"Fn::Equals": [{"Ref": "FleetKmsKeyArn"}, ""]}]}


# -- deploy/README.md: the fleet's and EKS's commands ('shell' blocks; the boot test runs 'bash') --

README = (REPO / "deploy" / "README.md").read_text()
SHELL_BLOCKS = re.findall(r"^```shell\n(.*?)^```$", README, re.MULTILINE | re.DOTALL)


def test_readme_fleet_commands_are_bash_and_parse():
    assert len(SHELL_BLOCKS) >= 4, "the fleet's and EKS's commands are in ```shell blocks"
    script = "\n".join(SHELL_BLOCKS)
    done = subprocess.run(["bash", "-n"], input=script, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    parsed = [parse_cli(argv) for argv in shell_commands(script, "nitro-llm")]
    policies = [params for name, params in parsed if name == "kms-policy"]
    assert [len(p["manifest"]) for p in policies] == [1, 2, 1]  # deploy; widen to old+new; narrow
    assert "build/new/manifest.json" in map(str, policies[1]["manifest"])
    assert [str(p) for p in policies[2]["manifest"]] == ["build/new/manifest.json"]
    # The fleet KMS key's policy: before the image; the image; after a retirement; widen; narrow.
    fleet = [params for name, params in parsed if name == "policy"]
    assert [len(p["manifest"] or ()) for p in fleet] == [0, 1, 1, 2, 1]
    assert fleet[0]["before_image"] and all(p["retired_file"] for p in fleet[2:])  # no retired id dropped
    builds = [params for name, params in parsed if name == "build"]
    assert builds and all(p["fleet_kms_key"] == "$FLEET_KMS_KEY" for p in builds)  # the fleet's one key


def test_readme_rollout_order_widen_roll_narrow():
    (block,) = [b for b in SHELL_BLOCKS if "--manifest build/new/manifest.json" in b]
    widen = block.index("--manifest build/image/manifest.json --manifest build/new/manifest.json")
    roll = block.index("ImagePrefix=$NEW_REF ImageManifestSha256=$NEW_SHA256")
    narrow = block.rindex("nitro-llm kms-policy --manifest build/new/manifest.json")
    publish = block.index("aws s3 cp build/new/manifest.json")
    assert publish < widen < roll < narrow
    fleet_widen = block.index(
        "nitro-llm fleet-key policy --manifest build/image/manifest.json --manifest build/new/manifest.json"
    )
    fleet_narrow = block.index("nitro-llm fleet-key policy --manifest build/new/manifest.json")
    assert publish < fleet_widen < roll < fleet_narrow
    assert block.count("aws kms put-key-policy --key-id $FLEET_KMS_KEY") == 2  # each one applied


def test_readme_sed_replaces_every_example_value_of_the_manifests(tmp_path):
    (block,) = [b for b in SHELL_BLOCKS if "cp -r deploy/kubernetes k8s" in b]
    sed = block[block.index("sed -i") : block.index("k8s/*.yaml")]
    manifests = REPO / "deploy" / "kubernetes"
    copy = tmp_path / "k8s"
    shutil.copytree(manifests, copy)
    env = {
        "PATH": "/usr/bin:/bin",
        "CERT_ARN": "arn:aws:acm:eu-west-1:210987654321:certificate/ffffffff-1111-2222-3333-444444444444",
        "FLEET_KMS_KEY": "arn:aws:kms:eu-west-1:210987654321:key/99999999-8888-7777-6666-555555555555",
        "REF": "f" * 40,
        "MANIFEST_SHA256": "e" * 64,
        "LOG_BUCKET": "my-logs",
        "MY_CIDR": "198.51.100.7/32",
        "ACCOUNT": "210987654321",
        "AWS_REGION": "eu-west-1",
    }
    done = subprocess.run(
        ["bash", "-c", f"{sed} k8s/*.yaml"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=30
    )
    assert done.returncode == 0, done.stderr
    text = "\n".join(p.read_text() for p in sorted(copy.glob("*.yaml")))
    examples = [
        "123456789012",
        "us-east-1",
        "0123456789abcdef01234567",
        "abababab",
        "203.0.113.",
        "00000000-0000",
        "11111111-2222",
    ]
    assert [e for e in examples if e in text] == []
    assert all(v in text for k, v in env.items() if k != "PATH")
