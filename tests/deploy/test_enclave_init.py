"""The enclave image's init: loopback, /etc/hosts, unprivileged port, privilege drop, exec."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from nitro_llm.deploy import enclave_init
from nitro_llm.deploy.enclave_init import EnclaveInitSettings, hosts_text, serve_argv
from nitro_llm.deploy.errors import EnclaveInitError

REPO = Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, timeout=10).returncode == 0


needs_netns = pytest.mark.skipif(
    not _can_unshare(), reason="needs root and unshare -n -m (network namespaces)"
)
# The stand-in server runs as 'nobody', which may not reach a virtualenv under /root.
SYSTEM_PYTHON = shutil.which("python3", path="/usr/bin:/bin")


def test_hosts_maps_kms_to_loopback_and_drops_other_entries_for_it():
    existing = "127.0.0.1\tlocalhost\n10.0.0.9 kms.eu-west-1.amazonaws.com other # old\n::1 ip6-localhost\n"
    text = hosts_text(existing, "kms.eu-west-1.amazonaws.com")
    lines = text.splitlines()
    assert lines[-1] == "127.0.0.1\tkms.eu-west-1.amazonaws.com"
    assert sum("kms.eu-west-1.amazonaws.com" in line for line in lines) == 1
    assert "10.0.0.9" not in text
    assert hosts_text(text, "kms.eu-west-1.amazonaws.com") == text  # idempotent


def test_hosts_adds_localhost_to_an_empty_file():
    assert hosts_text("", "kms.us-east-1.amazonaws.com").splitlines() == [
        "127.0.0.1\tlocalhost",
        "127.0.0.1\tkms.us-east-1.amazonaws.com",
    ]


def test_settings_come_from_the_image_environment():
    s = EnclaveInitSettings.from_env({"NITRO_LLM_REGION": "eu-west-1", "NITRO_LLM_THREADS": "4"})
    assert (s.region, s.port, s.kms_proxy_port, s.threads, s.user) == ("eu-west-1", 5000, 8000, 4, "enclave")
    with pytest.raises(EnclaveInitError) as info:
        EnclaveInitSettings.from_env({})
    assert "build-eif" in info.value.hint
    with pytest.raises(EnclaveInitError):
        EnclaveInitSettings.from_env({"NITRO_LLM_REGION": "eu-west-1", "NITRO_LLM_ENCLAVE_PORT": "x"})


def test_serve_argv_routes_kms_tls_through_the_parent():
    s = EnclaveInitSettings(region="eu-west-1", port=5001, kms_proxy_port=8001, threads=3)
    argv = serve_argv(s)
    assert argv[:3] == ["/opt/venv/bin/nitro-llm", "enclave", "serve"]
    value = {argv[i]: argv[i + 1] for i in range(3, len(argv) - 1) if argv[i].startswith("--")}
    assert value["--listen"] == "vsock:any:5001"
    assert value["--kms-endpoint"] == "https://kms.eu-west-1.amazonaws.com"  # TLS checked against KMS's name
    assert value["--kms-forward-to"] == "vsock:3:8001"
    assert value["--nsm"] == "device"
    assert value["--threads"] == "3"
    assert "--debug-mode" not in argv and "--dev-ca" not in argv


def test_serve_argv_flags_exist_on_the_enclave_command():
    """A renamed flag would make the enclave exit at boot, where nobody sees its console."""
    import typer.main

    from nitro_llm.cli.main import full_app


    app = full_app()

    commands = typer.main.get_command(app).commands
    if "enclave" not in commands:
        pytest.skip("the 'nitro-llm enclave' command is not registered in this checkout yet")
    serve = commands["enclave"].commands["serve"]
    known = {opt for p in serve.params for opt in p.opts}
    flags = {
        a for a in serve_argv(EnclaveInitSettings(region="eu-west-1", model="/m.gguf")) if a.startswith("--")
    }
    assert flags <= known, flags - known


def test_unprivileged_port_start_is_lowered_only_when_needed(tmp_path):
    knob = tmp_path / "ip_unprivileged_port_start"
    knob.write_text("1024\n")
    enclave_init.allow_unprivileged_port(443, knob)
    assert knob.read_text().strip() == "443"
    knob.write_text("0\n")
    enclave_init.allow_unprivileged_port(443, knob)
    assert knob.read_text().strip() == "0"


def test_root_user_is_refused_and_unknown_user_is_named():
    with pytest.raises(EnclaveInitError):
        enclave_init.lookup_user("root")
    with pytest.raises(EnclaveInitError) as info:
        enclave_init.lookup_user("no-such-user-here")
    assert "no-such-user-here" in info.value.message


def test_init_refuses_to_run_unprivileged(monkeypatch):
    monkeypatch.setattr(enclave_init.os, "geteuid", lambda: 1000)
    with pytest.raises(EnclaveInitError) as info:
        enclave_init.prepare(EnclaveInitSettings(region="eu-west-1"))
    assert "root" in info.value.message


@needs_netns
def test_loopback_comes_up_in_a_fresh_network_namespace():
    probe = textwrap.dedent(
        """
        import socket
        from nitro_llm.deploy.enclave_init import bring_up_loopback
        def works():
            try:
                with socket.socket() as srv, socket.socket() as cli:
                    srv.bind(("127.0.0.1", 0))
                    srv.listen()
                    cli.settimeout(2)
                    cli.connect(srv.getsockname())
                return True
            except OSError:
                return False
        before = works()
        changed = bring_up_loopback()
        print(before, changed, works(), bring_up_loopback())
        """
    )
    done = subprocess.run(
        ["unshare", "-n", sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["False", "True", "True", "False"]


@needs_netns
@pytest.mark.skipif(SYSTEM_PYTHON is None, reason="no system python3 for the unprivileged stand-in server")
def test_whole_init_in_a_namespace_then_execs_the_server_unprivileged():
    """main() for real in a private network and mount namespace (so /etc/hosts and the port knob are
    the namespace's own), exec'ing a stand-in server that reports what it was given."""
    work = Path(tempfile.mkdtemp(prefix="nitro-llm-init-"))
    try:
        work.chmod(0o755)
        out = work / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        hosts = work / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n")
        server = work / "server"
        server.write_text(
            f"#!{SYSTEM_PYTHON}\n"
            + textwrap.dedent(
                f"""
                import json, os, socket, sys
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 443))  # the KMS forwarder's port, as an unprivileged user
                    bound = True
                report = dict(argv=sys.argv[1:], uid=os.getuid(), euid=os.geteuid(), groups=os.getgroups(),
                              hosts=open("/etc/hosts").read(), bound=bound)
                open("{out}/report.json", "w").write(json.dumps(report))
                """
            )
        )
        server.chmod(server.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
        script = f"mount --bind {hosts} /etc/hosts && exec {sys.executable} -m nitro_llm.deploy.enclave_init"
        env = {
            "PATH": "/usr/bin:/bin",
            "PYTHONPATH": str(REPO),
            "NITRO_LLM_REGION": "eu-west-1",
            "NITRO_LLM_USER": "nobody",
            "NITRO_LLM_BIN": str(server),
        }
        done = subprocess.run(
            ["unshare", "-n", "-m", "sh", "-c", script], env=env, capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr
        report = json.loads((out / "report.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert report["uid"] == report["euid"] != 0
    assert report["groups"] == []
    assert report["bound"] is True
    assert report["hosts"].splitlines()[-1] == "127.0.0.1\tkms.eu-west-1.amazonaws.com"
    assert report["argv"][:2] == ["enclave", "serve"]
    assert Path("/etc/hosts").read_text().find("kms.eu-west-1.amazonaws.com") == -1  # host untouched


def test_enclave_runtime_accepts_the_kms_hostname_endpoint():
    from nitro_llm.enclave.runtime import forwarder_listen_address

    argv = serve_argv(EnclaveInitSettings(region="eu-west-1"))
    endpoint = argv[argv.index("--kms-endpoint") + 1]
    assert forwarder_listen_address(endpoint) == f"tcp:127.0.0.1:{enclave_init.KMS_TLS_PORT}"
