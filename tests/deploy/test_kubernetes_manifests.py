"""The EKS manifests (deploy/kubernetes/): valid against the Kubernetes schemas of a pinned version,
strictly (an unknown field fails), and right where it matters: the Nitro Enclaves device plugin's
resource and hugepages on the container that runs nitro-cli, the device plugin's nodes, probes on the
gateway's /healthz, no privileged container (the one root container has every capability dropped),
containers that run exactly what the EC2 instance's systemd units run, from the same config, and the
wrapped fleet key in every pod's gateway where the config says."""

from __future__ import annotations

import copy
import re
import tomllib
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from cfn_testing import REPO, parse_cli, shell_commands

from nitro_llm.cli import deploy as deploy_cli
from nitro_llm.deploy import host_files
from nitro_llm.deploy.config import DeployConfig

KUBERNETES_VERSION = "1.33"  # EKS standard support; kubernetes-validate ships its schemas (offline)
MANIFESTS = REPO / "deploy" / "kubernetes"
DEVICE = "aws.ec2.nitro/nitro_enclaves"
DEVICE_PLUGIN_LABEL = "aws-nitro-enclaves-k8s-dp"


def load_all() -> dict[tuple[str, str], dict[str, Any]]:
    docs = {}
    for path in sorted(MANIFESTS.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            docs[(doc["kind"], doc["metadata"]["name"])] = doc
    return docs


DOCS = load_all()
DEPLOYMENT = DOCS[("Deployment", "nitro-llm")]
POD = DEPLOYMENT["spec"]["template"]["spec"]
CONTAINERS = {c["name"]: c for c in POD["containers"]}
INIT = {c["name"]: c for c in POD["initContainers"]}
CONFIG_MAP = DOCS[("ConfigMap", "nitro-llm-deploy")]
CONFIG_PATH = Path("/etc/nitro-llm/config/deploy.toml")
CFG = DeployConfig.from_mapping(tomllib.loads(CONFIG_MAP["data"]["deploy.toml"]), CONFIG_PATH.parent)


# -- the schemas ---------------------------------------------------------------------------------


@pytest.mark.parametrize("key", sorted(DOCS), ids=lambda k: f"{k[0]}/{k[1]}")
def test_manifest_is_valid_against_the_kubernetes_schema_strictly(key):
    try:
        assert kubernetes_validate.validate(DOCS[key], KUBERNETES_VERSION, strict=True) == KUBERNETES_VERSION
    except kubernetes_validate.ValidationError as exc:
        where = ".".join(str(p) for p in exc.path)
        pytest.fail(f"{key}: {where}: {exc.message}")
    # SchemaNotFoundError (an unknown kind or apiVersion) propagates and fails the test too.


@pytest.mark.parametrize(
    ("edit", "where"),
    [
        (
            lambda d: d["spec"]["template"]["spec"]["containers"][0].update(readinessProbes={}),
            "readinessProbes",
        ),
        (lambda d: d["spec"]["template"]["spec"]["containers"][0]["resources"].update(limit={}), "limit"),
        (lambda d: d["spec"].update(replicas="two"), "replicas"),
    ],
    ids=["unknown-field", "misspelt-field", "wrong-type"],
)
def test_strict_validation_catches_a_broken_deployment(edit, where):
    broken = copy.deepcopy(DEPLOYMENT)
    edit(broken)
    with pytest.raises(kubernetes_validate.ValidationError) as info:
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)
    assert where in str(info.value.message) or where in [str(p) for p in info.value.path]


def test_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((MANIFESTS / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(
        p.name for p in MANIFESTS.glob("*.yaml") if p.name != "kustomization.yaml"
    )


# -- the enclave: device plugin resource, hugepages, the plugin's nodes --------------------------


def test_the_enclave_container_alone_requests_the_device_and_hugepages_for_the_enclave():
    for name, container in {**CONTAINERS, **INIT}.items():
        resources = container["resources"]
        if name != "enclave":
            assert DEVICE not in resources["limits"] and not any(
                k.startswith("hugepages-") for k in resources["limits"]
            )
    resources = CONTAINERS["enclave"]["resources"]
    assert resources["requests"][DEVICE] == resources["limits"][DEVICE] == "1"
    hugepages = {k: v for k, v in resources["limits"].items() if k.startswith("hugepages-")}
    assert hugepages == {k: v for k, v in resources["requests"].items() if k.startswith("hugepages-")}
    (size,) = hugepages  # one page size, as the node's allocator reserved it
    assert size in ("hugepages-1Gi", "hugepages-2Mi")
    assert mebibytes(hugepages[size]) == CFG.enclave.memory_mib  # what 'nitro-cli run-enclave --memory' takes
    media = {v["name"]: v["emptyDir"].get("medium") for v in POD["volumes"] if "emptyDir" in v}
    mounted = {m["name"] for m in CONTAINERS["enclave"]["volumeMounts"]}
    assert any(media.get(name) == f"HugePages-{size.split('-')[1]}" for name in mounted)


def mebibytes(quantity: str) -> int:
    number, unit = re.fullmatch(r"(\d+)(Mi|Gi)", quantity).groups()  # type: ignore[union-attr]
    return int(number) * (1024 if unit == "Gi" else 1)


def test_pods_go_to_the_device_plugins_nodes_one_per_node():
    assert POD["nodeSelector"] == {DEVICE_PLUGIN_LABEL: "enabled"}
    assert {
        "key": DEVICE_PLUGIN_LABEL,
        "operator": "Equal",
        "value": "enabled",
        "effect": "NoSchedule",
    } in POD["tolerations"]
    (rule,) = POD["affinity"]["podAntiAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    assert rule["topologyKey"] == "kubernetes.io/hostname"
    assert rule["labelSelector"]["matchLabels"] == DEPLOYMENT["spec"]["selector"]["matchLabels"]
    strategy = DEPLOYMENT["spec"]["strategy"]["rollingUpdate"]
    assert strategy == {"maxSurge": 0, "maxUnavailable": 1}  # a surge pod would find no free node


# -- probes on /healthz ----------------------------------------------------------------------------


def test_readiness_and_liveness_on_the_gateways_healthz():
    gateway_port = CFG.gateway.port
    (port,) = CONTAINERS["gateway"]["ports"]
    assert port["containerPort"] == gateway_port
    ready = CONTAINERS["gateway"]["readinessProbe"]["httpGet"]
    assert (ready["path"], ready["scheme"], ready["port"]) == ("/healthz", "HTTPS", port["name"])
    enclave = CONTAINERS["enclave"]
    for probe in ("startupProbe", "livenessProbe"):
        get = enclave[probe]["httpGet"]
        assert (get["path"], get["scheme"], get["port"]) == ("/healthz", "HTTPS", gateway_port)
    # The kubelet restarts the enclave only after the supervisor had its chance (boot grace, then
    # unhealthy_after, then a backoff and a boot).
    live = enclave["livenessProbe"]
    window = live["periodSeconds"] * live["failureThreshold"]
    assert window > CFG.supervisor.boot_grace + CFG.supervisor.unhealthy_after
    assert CONTAINERS["gateway"]["livenessProbe"]["httpGet"]["scheme"] == "HTTPS"


# -- privileges ------------------------------------------------------------------------------------


def test_no_privileged_container_and_only_the_enclave_runs_as_root_without_capabilities():
    assert not any(POD.get(k) for k in ("hostNetwork", "hostPID", "hostIPC"))
    assert not any("hostPath" in v for v in POD["volumes"])
    assert POD["securityContext"]["runAsNonRoot"] is True and POD["securityContext"]["runAsUser"] != 0
    assert POD["automountServiceAccountToken"] is False
    for name, container in {**CONTAINERS, **INIT}.items():
        sc = container["securityContext"]
        assert not sc.get("privileged"), name
        assert sc["allowPrivilegeEscalation"] is False, name
        assert sc["readOnlyRootFilesystem"] is True, name
        assert sc["capabilities"] == {"drop": ["ALL"]}, name  # nothing added back
        assert sc.get("runAsUser", POD["securityContext"]["runAsUser"]) != 0 or name == "enclave", name
    # The one root container is explained where it is declared, and in the README.
    assert "runs as uid 0" in (MANIFESTS / "deployment.yaml").read_text()
    assert "The enclave container runs as root" in (REPO / "deploy" / "README.md").read_text()
    namespace = DOCS[("Namespace", "nitro-llm")]["metadata"]["labels"]
    assert namespace["pod-security.kubernetes.io/enforce"] == "baseline"  # no privileged pod admitted


def test_every_container_has_cpu_and_memory_requests_and_limits():
    for name, container in {**CONTAINERS, **INIT}.items():
        for kind in ("requests", "limits"):
            assert {"cpu", "memory"} <= set(container["resources"][kind]), (name, kind)


# -- the same commands as the EC2 instance's units, from the same config ---------------------------


def test_containers_run_what_the_instances_units_run():
    assert CONTAINERS["gateway"]["command"] == host_files.gateway_argv(CFG)
    assert CONTAINERS["vsock-proxy"]["command"] == host_files.vsock_proxy_argv(CFG)
    assert CONTAINERS["enclave"]["command"] == host_files.supervise_argv(CFG, CONFIG_PATH)
    ((allowlist_path, allowlist),) = host_files.render_vsock_proxy_allowlist(CFG).items()
    assert CONFIG_MAP["data"]["vsock-proxy.yaml"] == allowlist
    (mount,) = CONTAINERS["vsock-proxy"]["volumeMounts"]
    assert (mount["mountPath"], mount["subPath"]) == (str(allowlist_path), "vsock-proxy.yaml")
    assert "--imds" in CONTAINERS["gateway"]["command"]  # the node's role, as on EC2


def test_init_containers_run_the_bootstraps_commands():
    install = INIT["install-eif"]["command"][-1]
    (argv,) = shell_commands(install, "nitro-llm")
    name, params = parse_cli(argv, deploy_cli.register)
    assert name == "install-eif" and params["config"] == CONFIG_PATH
    assert params["manifest_sha256"] == "$IMAGE_MANIFEST_SHA256"
    env = {e["name"]: e["value"] for e in INIT["install-eif"]["env"]}
    assert re.fullmatch(r"[0-9a-f]{64}", env["IMAGE_MANIFEST_SHA256"])
    assert env["AWS_REGION"] == CFG.region
    files = INIT["gateway-files"]["command"][-1]
    (argv,) = shell_commands(files, "nitro-llm")
    name, params = parse_cli(argv, deploy_cli.register)
    assert name == "gateway-files" and params["tls_only"] is True  # the tokens come from the Secret


def test_volumes_put_each_file_where_the_config_says():
    def mounts(container: dict[str, Any]) -> dict[str, str]:
        return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}

    volumes = {v["name"]: v for v in POD["volumes"]}
    tokens_dir = str(CFG.path(CFG.gateway.api_tokens_file).parent)  # type: ignore[arg-type]
    assert (
        volumes[mounts(CONTAINERS["gateway"])[tokens_dir]]["secret"]["secretName"] == "nitro-llm-api-tokens"
    )
    tls_dir = str(CFG.path(CFG.gateway.tls_cert).parent.parent)  # type: ignore[arg-type]
    assert mounts(CONTAINERS["gateway"])[tls_dir] == mounts(INIT["gateway-files"])[tls_dir] == "gateway-tls"
    assert volumes["gateway-tls"]["emptyDir"]["medium"] == "Memory"  # the key stays in the pod's memory
    # The enclave container sees the certificate (to check /healthz) at the same path, not the key.
    assert mounts(CONTAINERS["enclave"])[tls_dir] == "gateway-cert"
    build_dir = str(CFG.path(CFG.enclave.eif).parent)
    assert mounts(CONTAINERS["enclave"])[build_dir] == mounts(INIT["install-eif"])[build_dir] == "build"
    for container in (*CONTAINERS.values(), *INIT.values()):
        if "/etc/nitro-llm/config" in mounts(container):
            assert (
                volumes[mounts(container)["/etc/nitro-llm/config"]]["configMap"]["name"] == "nitro-llm-deploy"
            )
        assert container["image"] == "nitro-llm-host"  # one image (deploy/kubernetes/host-image)


def test_the_gateway_gets_the_wrapped_fleet_key_from_a_configmap_that_can_be_updated():
    assert CFG.fleet is not None and CFG.fleet.kms_key_arn.split(":")[3] == CFG.region
    key_file = CFG.path(CFG.fleet.key_file)
    volumes = {v["name"]: v for v in POD["volumes"]}
    holders = {
        name: m
        for name, container in {**CONTAINERS, **INIT}.items()
        for m in container["volumeMounts"]
        if volumes[m["name"]].get("configMap", {}).get("name") == "nitro-llm-fleet-key"
    }
    assert list(holders) == ["gateway"]  # the enclave gets it from its gateway, over vsock
    mount = holders["gateway"]
    # A folder, not a subPath (a subPath mount never sees an updated ConfigMap: no rotation).
    assert mount["mountPath"] == str(key_file.parent) and "subPath" not in mount and mount["readOnly"]
    gateway = CONTAINERS["gateway"]["command"]
    assert gateway[gateway.index("--fleet-key-file") + 1] == str(key_file)
    # The README makes that ConfigMap from the file 'fleet-key create' wrote, under the name read here.
    readme = (REPO / "deploy" / "README.md").read_text()
    assert f"create configmap nitro-llm-fleet-key --from-file={key_file.name}" in readme
    # The enclave side (install-eif and the supervisor) reads the same config, hence the same ARN.
    for container in (INIT["install-eif"], CONTAINERS["enclave"]):
        assert str(CONFIG_PATH) in " ".join(container["command"])


# -- the Service (an NLB) and the disruption budget -------------------------------------------------


def test_service_is_an_nlb_with_tls_and_healthz_checks():
    service = DOCS[("Service", "nitro-llm")]
    spec, notes = service["spec"], service["metadata"]["annotations"]
    prefix = "service.beta.kubernetes.io/aws-load-balancer-"
    assert spec["type"] == "LoadBalancer" and spec["loadBalancerClass"] == "service.k8s.aws/nlb"
    assert notes[prefix + "nlb-target-type"] == "ip"
    assert notes[prefix + "ssl-cert"].startswith("arn:aws:acm:")
    assert notes[prefix + "ssl-negotiation-policy"].startswith("ELBSecurityPolicy-TLS13")
    assert notes[prefix + "backend-protocol"] == "ssl"  # TLS again to the gateways
    assert (notes[prefix + "healthcheck-protocol"], notes[prefix + "healthcheck-path"]) == (
        "HTTPS",
        "/healthz",
    )
    assert notes[prefix + "healthcheck-success-codes"] == "200"
    (port,) = spec["ports"]
    assert notes[prefix + "ssl-ports"] == str(port["port"])
    assert port["targetPort"] == CONTAINERS["gateway"]["ports"][0]["name"]
    assert spec["selector"] == DEPLOYMENT["spec"]["template"]["metadata"]["labels"]
    assert spec["loadBalancerSourceRanges"] and "0.0.0.0/0" not in spec["loadBalancerSourceRanges"]


def test_disruption_budget_covers_the_pods():
    pdb = DOCS[("PodDisruptionBudget", "nitro-llm")]["spec"]
    assert pdb["maxUnavailable"] == 1
    assert pdb["selector"]["matchLabels"] == DEPLOYMENT["spec"]["selector"]["matchLabels"]


def test_the_host_image_has_what_the_pod_runs():
    containerfile = (MANIFESTS / "host-image" / "Containerfile").read_text()
    uid = POD["securityContext"]["runAsUser"]
    assert f"--uid {uid}" in containerfile and f"{CFG.gateway.user}\n" in containerfile
    assert f"USER {uid}" in containerfile
    assert str(CFG.gateway.nitro_llm).removesuffix("/bin/nitro-llm") in containerfile  # the venv
    for package in ("aws-nitro-enclaves-cli", "awscli-2", "python3.11"):  # nitro-cli + vsock-proxy, aws
        assert package in containerfile
