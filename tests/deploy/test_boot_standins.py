"""From an empty account to serving, as deploy/README.md says, against recording stand-ins.

The README's bash blocks run in order, as one shell session on a stand-in laptop; its ``aws``
creates the stack by running the template's UserData as root on a stand-in instance (a
copy-on-write root of this machine, see standins.instance), and its SSM runs commands there. No
step may fail: the shell runs with ``set -euo pipefail``. Then the files the steps left are checked,
owners and modes included, and the token the README issued is checked against the gateway's file.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import stat
import subprocess
from pathlib import Path

import pytest
import standins
from cryptography import x509
from standins.git import COMMIT
from standins.instance import run_on_instance
from standins.recording import calls

from nitro_llm.gateway.auth import TokenRegistry

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
README = REPO / "deploy" / "README.md"


def readme_script() -> str:
    blocks = re.findall(r"^```bash\n(.*?)^```$", README.read_text(), re.MULTILINE | re.DOTALL)
    assert len(blocks) >= 9, "the README's commands are in ```bash blocks"
    return "\n".join(blocks)


def boot(
    tmp_path: Path, *, template_edit: tuple[str, str] | None = None
) -> tuple[subprocess.CompletedProcess[str], dict]:
    state, upper = tmp_path / "shared", tmp_path / "instance" / "upper"
    state.mkdir()
    bin_dir = standins.install(state / "bin")
    laptop = tmp_path / "laptop"
    shutil.copytree(REPO / "deploy", laptop / "deploy")
    if template_edit:
        template = laptop / "deploy" / "cloudformation" / "nitro-llm.yaml"
        old, new = template_edit
        assert old in template.read_text()
        template.write_text(template.read_text().replace(old, new))
    blobs = image_standin_blobs(tmp_path / "blobs")
    env = {
        "PATH": f"{bin_dir}:{Path(shutil.which('python3') or '/usr/bin/python3').parent}:/usr/bin:/bin",
        "HOME": str(laptop),
        "BLOBS": str(blobs),
        "SSM_POLL_SECONDS": "0",
        "STANDIN_STATE": str(state),
        "STANDIN_INSTANCE": str(upper),
        "STANDIN_BIN": str(bin_dir),
        "STANDIN_LOG": str(state / "calls.log"),
        "STANDIN_REPO": str(REPO),
        "STANDIN_SOURCE_REF": COMMIT,
        "STANDIN_ENCLAVE_SOCKET": str(state / "enclave.sock"),
        "STANDIN_DEVCA": str(state / "devca"),
    }
    os.environ.update({k: v for k, v in env.items() if k.startswith("STANDIN_")})
    # The AMI: the AWS CLI and sudo are preinstalled on Amazon Linux 2023.
    prep = run_on_instance(
        f"ln -sf {bin_dir}/aws /usr/bin/aws && ln -sf {bin_dir}/sudo /usr/bin/sudo && ln -sf {bin_dir}/dnf /usr/bin/dnf && ln -sf {bin_dir}/systemctl /usr/bin/systemctl && chmod 711 /root",
        capture=True,
    )
    assert prep.returncode == 0, prep.stderr
    done = subprocess.run(
        ["bash", "-euo", "pipefail", "-c", readme_script()],
        cwd=laptop, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    return done, {"state": state, "upper": upper, "laptop": laptop}


def image_standin_blobs(path: Path) -> Path:
    import image_standin

    return image_standin.write_blobs(path)


def owner_mode(root: Path, path: str) -> tuple[str, int]:
    """Owner by the instance's own /etc/passwd (its useradd wrote there, not on this machine)."""
    users = {}
    for line in (root / "etc/passwd").read_text().splitlines():
        fields = line.split(":")
        users[int(fields[2])] = fields[0]
    info = (root / path.lstrip("/")).lstat()
    return users.get(info.st_uid, str(info.st_uid)), stat.S_IMODE(info.st_mode)


# What the gateway and the supervisor need, file by file: (owner, mode).
EXPECTED = {
    "/etc/nitro-llm": ("root", 0o755),
    "/etc/nitro-llm/deploy.toml": ("root", 0o644),
    "/etc/nitro-llm/gateway": ("nitro-llm", 0o700),
    "/etc/nitro-llm/gateway/api-tokens.json": ("nitro-llm", 0o600),
    "/etc/nitro-llm/gateway/tls.key": ("nitro-llm", 0o600),
    "/etc/nitro-llm/gateway/tls.crt": ("nitro-llm", 0o644),
    "/opt/nitro-llm/build/nitro-llm.eif": ("root", 0o644),
    "/opt/nitro-llm/build/manifest.json": ("root", 0o644),
    "/etc/systemd/system/nitro-llm-gateway.service": ("root", 0o644),
    "/etc/systemd/system/nitro-llm-enclave.service": ("root", 0o644),
    "/etc/systemd/system/nitro-llm-vsock-proxy.service": ("root", 0o644),
    "/etc/nitro_enclaves/allocator.yaml": ("root", 0o644),
}


def check_owners_and_modes(upper: Path) -> list[str]:
    wrong = []
    for path, want in EXPECTED.items():
        if not (upper / path.lstrip("/")).exists():
            wrong.append(f"{path}: missing")
            continue
        got = owner_mode(upper, path)
        if got != want:
            wrong.append(f"{path}: {got[0]} {got[1]:04o}, needs {want[0]} {want[1]:04o}")
    return wrong


def test_readme_and_user_data_run_without_a_failing_step(tmp_path):
    done, where = boot(tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    upper, state, laptop = where["upper"], where["state"], where["laptop"]
    assert (state / "cfn-signal").read_text() == "0"
    assert check_owners_and_modes(upper) == []

    # Build once, verify everywhere: the instance runs exactly the published EIF and manifest.
    published = laptop / "build" / "image"  # what step 2 uploaded (step "Cleaning up" removed the bucket)
    for name in ("nitro-llm.eif", "manifest.json"):
        assert (upper / "opt/nitro-llm/build" / name).read_bytes() == (published / name).read_bytes()
    assert not (upper / "opt/nitro-llm/build/download.eif").exists()

    # The token the README issued (as the gateway's user) is in the gateway's file; the client pins
    # the instance's certificate, which names the Elastic IP and loopback.
    client = json.loads((laptop / "client.json").read_text())
    tokens = upper / "etc/nitro-llm/gateway/api-tokens.json"
    assert TokenRegistry(tokens).authenticate(f"Bearer {client['api_token']}").name == "alice"
    assert client["gateway_url"] == "https://203.0.113.10:8080"
    pem = (upper / "etc/nitro-llm/gateway/tls.crt").read_bytes()
    assert (laptop / "gateway.pem").read_bytes() == pem
    sans = x509.load_pem_x509_certificate(pem).extensions.get_extension_for_class(x509.SubjectAlternativeName)
    assert {str(ip) for ip in sans.value.get_values_for_type(x509.IPAddress)} >= {"203.0.113.10", "127.0.0.1"}
    key = (upper / "etc/nitro-llm/gateway/tls.key").read_text()
    assert "PRIVATE KEY" in key and key not in (laptop / "gateway.pem").read_text()

    # Services: ours enabled, the stock all-regions vsock-proxy not; the token issued as nitro-llm.
    wants = upper / "etc/systemd/system/multi-user.target.wants"
    enabled = {p.name for p in wants.iterdir()}
    assert {"nitro-llm-gateway.service", "nitro-llm-enclave.service", "nitro-llm-vsock-proxy.service",
            "nitro-enclaves-allocator.service"} <= enabled  # fmt: skip
    assert "nitro-enclaves-vsock-proxy.service" not in enabled
    log = state / "calls.log"
    issued = [c for c in calls(log) if c["tool"] == "git"]
    assert issued, "the instance fetched its tools"
    assert any(c["argv"][:2] == ["install", "-y"] for c in calls(log, "dnf"))
    needs_aws = [c["argv"][:3] for c in calls(log, "nitro-llm") if c["argv"][0] in ("attest", "ask")]
    assert needs_aws == [
        ["attest", "fetch", "--config"],
        ["attest", "verify", "document.cbor"],
        ["ask", "--config", "client.json"],
    ]
    assert any(c["argv"] == ["describe-enclaves"] for c in calls(log, "nitro-cli"))  # the update step


def test_a_root_owned_gateway_folder_fails_the_documented_steps(tmp_path):
    """Without the gateway-files step (the desk review's finding: a folder root owns, as the old
    UserData made), the owner/mode check fails and the README's gateway-token step fails with EACCES."""
    step = "nitro-llm deploy gateway-files --config /etc/nitro-llm/deploy.toml --address '${GatewayAddress}'"
    old = (
        "install -d -m 0755 /etc/nitro-llm/gateway && "
        'echo \'{"format": "nitro-llm-api-tokens/1", "clients": {}}\' > /etc/nitro-llm/gateway/api-tokens.json'
    )
    done, where = boot(tmp_path, template_edit=(step, old))
    assert done.returncode != 0
    assert "ended with status Failed" in done.stderr, done.stderr[-2000:]  # a documented step failed
    wrong = check_owners_and_modes(where["upper"])
    assert "/etc/nitro-llm/gateway: root 0755, needs nitro-llm 0700" in wrong
