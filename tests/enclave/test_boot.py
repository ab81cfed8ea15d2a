"""The enclave image's entrypoint (``nitro_llm.enclave.main``) and its boot steps (``boot``):
platform detection, loopback, /etc/hosts, unprivileged port, privilege drop, then serving in-process.

Moved from tests/deploy/test_enclave_init.py when the init moved into the enclave package: the
assertions on the argv of the ``nitro-llm enclave serve`` it used to exec are now assertions on
the platform settings ``main`` hands to ``runtime.serve``.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path

import pytest

from nitro_llm.enclave import boot, main
from nitro_llm.enclave.boot import hosts_text, local_settings, nitro_settings
from nitro_llm.enclave.config import EnclaveConfig, canonical_config
from nitro_llm.enclave.errors import EnclaveInitError

REPO = Path(__file__).resolve().parents[2]


def _can_unshare() -> bool:
    if shutil.which("unshare") is None or os.geteuid() != 0:
        return False
    return subprocess.run(["unshare", "-n", "-m", "true"], capture_output=True, timeout=10).returncode == 0


needs_netns = pytest.mark.skipif(
    not _can_unshare(), reason="needs root and unshare -n -m (network namespaces)"
)


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


def test_settings_come_from_the_image_command_and_its_measured_config(tmp_path):
    args = main.parse_args(["--config", str(tmp_path / "enclave.json"), "--region", "eu-west-1"])
    assert (args.region, args.port, args.kms_proxy_port) == ("eu-west-1", 5000, 8000)
    assert boot.ENCLAVE_USER == "enclave"
    config_file = tmp_path / "enclave.json"
    config_file.write_bytes(canonical_config(EnclaveConfig(threads=4).measured()))
    config = main.load_config(config_file)
    assert config.threads == 4 and config.model_path == Path("/opt/nitro-llm/model.gguf")
    device = tmp_path / "nsm"
    device.touch()
    with pytest.raises(EnclaveInitError) as info:  # on Nitro the region is part of the image's command
        boot.detect_platform(None, nsm_device=device, nsm_socket=tmp_path / "absent.sock")
    assert "region" in info.value.message and "build the image" in info.value.hint
    with pytest.raises(SystemExit):
        main.parse_args(["--port", "x"])


def test_nitro_settings_route_kms_tls_through_the_parent():
    s = nitro_settings("eu-west-1", port=5001, kms_proxy_port=8001)
    assert s.kind == "nitro"
    assert s.listen_address == "vsock:any:5001"
    assert s.kms_endpoint == "https://kms.eu-west-1.amazonaws.com"  # TLS checked against KMS's name
    assert s.kms_forward_to == "vsock:3:8001"
    assert s.kms_host == "kms.eu-west-1.amazonaws.com"
    assert (s.nsm_kind, s.nsm_path) == ("device", "/dev/nsm")
    assert nitro_settings("cn-north-1").kms_host == "kms.cn-north-1.amazonaws.com.cn"


def test_local_settings_use_the_sockets_the_stack_mounts():
    s = local_settings()
    assert s.kind == "local" and s.region == "us-east-1"
    assert s.listen_address == "unix:/run/nitro-llm/enclave.sock"
    assert s.kms_endpoint == "http://127.0.0.1:8443" and s.forwarder_port == 8443
    assert s.kms_forward_to == "unix:/run/nitro-llm/kms-relay.sock"
    assert (s.nsm_kind, s.nsm_path) == ("socket", "unix:/run/nitro-llm/nsm.sock")
    assert s.kms_host is None  # nothing to map in /etc/hosts (and the root is read-only)


def test_no_option_of_the_command_can_choose_debug_mode_or_another_nsm():
    """Debug mode is the hypervisor's launch flag, and the NSM is found, not chosen: an image command
    cannot point the enclave at an emulator or a dev CA."""
    for flag in ("--debug-mode", "--dev-ca", "--nsm", "--listen", "--kms-endpoint", "--model"):
        with pytest.raises(SystemExit):
            main.parse_args([flag, "x"])


def test_platform_is_nitro_with_the_device_local_with_the_socket_else_an_error_naming_both(tmp_path):
    device, sock = tmp_path / "nsm", tmp_path / "nsm.sock"
    with pytest.raises(EnclaveInitError) as info:
        boot.detect_platform("eu-west-1", nsm_device=device, nsm_socket=sock)
    assert str(device) in info.value.message and str(sock) in info.value.message
    sock.touch()
    assert boot.detect_platform(None, nsm_device=device, nsm_socket=sock).kind == "local"
    assert boot.detect_platform("eu-west-2", nsm_device=device, nsm_socket=sock).region == "eu-west-2"
    device.touch()  # the device wins: a Nitro enclave never falls back to a socket
    assert boot.detect_platform("eu-west-1", nsm_device=device, nsm_socket=sock).kind == "nitro"


def test_main_serves_in_process_with_the_platform_settings(tmp_path, monkeypatch):
    """What used to be the exec'd CLI's argv: ``runtime.serve`` gets the listen address, the KMS route
    and the NSM of the detected platform, and the config read from the image."""
    from nitro_llm.enclave import runtime

    config_file = tmp_path / "enclave.json"
    config_file.write_bytes(canonical_config(EnclaveConfig(threads=3, seed_compat=True).measured()))
    calls: dict[str, object] = {}

    class FakeNsm:
        def describe_pcr(self, index: int):
            return type("Pcr", (), {"data": b"\1" * 48})()

    monkeypatch.setattr(
        boot, "detect_platform", lambda region, port, proxy: nitro_settings(region, port, proxy)
    )
    monkeypatch.setattr(boot, "prepare", lambda settings: calls.setdefault("prepared", settings))
    monkeypatch.setattr(main, "open_platform_nsm", lambda settings: FakeNsm())
    monkeypatch.setattr(runtime, "serve", lambda config, **kw: calls.update(config=config, **kw))
    main.run(main.parse_args(["--config", str(config_file), "--region", "eu-west-1", "--model-name", "m"]))
    kms = calls["kms"]
    assert calls["listen_address"] == "vsock:any:5000"
    assert (kms.endpoint, kms.forward_to, kms.region) == (
        "https://kms.eu-west-1.amazonaws.com",
        "vsock:3:8000",
        "eu-west-1",
    )
    config = calls["config"]
    assert (config.threads, config.seed_compat, config.model_name, config.debug_mode) == (3, True, "m", False)


def test_debug_mode_is_read_from_the_nsm(tmp_path, monkeypatch):
    from nitro_llm.enclave import runtime

    config_file = tmp_path / "enclave.json"
    config_file.write_bytes(canonical_config(EnclaveConfig().measured()))
    seen = {}

    class DebugNsm:
        def describe_pcr(self, index: int):
            return type("Pcr", (), {"data": bytes(48)})()

    monkeypatch.setattr(boot, "detect_platform", lambda *a: local_settings())
    monkeypatch.setattr(boot, "prepare", lambda settings: None)
    monkeypatch.setattr(main, "open_platform_nsm", lambda settings: DebugNsm())
    monkeypatch.setattr(runtime, "serve", lambda config, **kw: seen.update(config=config))
    main.run(main.parse_args(["--config", str(config_file)]))
    assert seen["config"].debug_mode is True


def test_the_measured_config_must_be_canonical_and_known(tmp_path):
    path = tmp_path / "enclave.json"
    measured = EnclaveConfig().measured()
    path.write_text(json.dumps(measured, indent=2))  # same settings, not the bytes that were measured
    with pytest.raises(EnclaveInitError, match="canonical"):
        main.load_config(path)
    path.write_bytes(canonical_config({**measured, "debug_mode": True}))
    with pytest.raises(EnclaveInitError, match="debug_mode"):
        main.load_config(path)
    with pytest.raises(EnclaveInitError, match="cannot read"):
        main.load_config(tmp_path / "absent.json")


def test_the_packaged_model_keeps_its_name(tmp_path):
    from nitro_llm.inference.model import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256

    digest = tmp_path / "model.gguf.sha256"
    digest.write_text(f"{DEFAULT_MODEL_SHA256}  model.gguf\n")
    assert main.default_model_name(digest) == DEFAULT_MODEL_NAME
    digest.write_text(f"{'0' * 64}  model.gguf\n")
    assert main.default_model_name(digest) is None
    assert main.default_model_name(tmp_path / "absent") is None


def test_paths_and_user_match_the_image_layout():
    from nitro_llm.image import layout, system_files

    assert str(main.CONFIG_PATH) == f"/{layout.CONFIG_PATH}"
    assert str(main.MODEL_PATH) == f"/{layout.MODEL_PATH}"
    assert boot.ENCLAVE_USER == system_files.ENCLAVE_USER
    assert layout.enclave_cmd("nitro_llm.enclave.main")[-2:] == ["--config", str(main.CONFIG_PATH)]


def test_unprivileged_port_start_is_lowered_only_when_needed(tmp_path):
    knob = tmp_path / "ip_unprivileged_port_start"
    knob.write_text("1024\n")
    boot.allow_unprivileged_port(443, knob)
    assert knob.read_text().strip() == "443"
    knob.write_text("0\n")
    boot.allow_unprivileged_port(443, knob)
    assert knob.read_text().strip() == "0"


def test_root_user_is_refused_and_unknown_user_is_named():
    with pytest.raises(EnclaveInitError):
        boot.lookup_user("root")
    with pytest.raises(EnclaveInitError) as info:
        boot.lookup_user("no-such-user-here")
    assert "no-such-user-here" in info.value.message


def test_init_refuses_to_run_unprivileged(monkeypatch):
    monkeypatch.setattr(boot.os, "geteuid", lambda: 1000)
    with pytest.raises(EnclaveInitError) as info:
        boot.prepare(nitro_settings("eu-west-1"))
    assert "root" in info.value.message


def test_parent_cid_is_the_deploy_configs():
    from nitro_llm.deploy.config import PARENT_CID

    assert PARENT_CID == boot.PARENT_CID == 3


@needs_netns
def test_loopback_comes_up_in_a_fresh_network_namespace():
    probe = textwrap.dedent(
        """
        import socket
        from nitro_llm.enclave.boot import bring_up_loopback
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
def test_whole_entrypoint_in_a_namespace_then_serves_unprivileged():
    """main() for real in a private network and mount namespace (so /etc/hosts and the port knob are
    the namespace's own) on the Nitro path, with a stand-in for ``runtime.serve`` that reports what it
    was given and what it may do after the entrypoint dropped root."""
    work = Path(tempfile.mkdtemp(prefix="nitro-llm-init-"))
    try:
        work.chmod(0o755)
        out = work / "out"
        out.mkdir(mode=0o777)
        out.chmod(0o777)
        hosts = work / "hosts"
        hosts.write_text("127.0.0.1\tlocalhost\n")
        config = work / "enclave.json"
        config.write_bytes(canonical_config(EnclaveConfig(threads=2).measured()))
        config.chmod(0o644)
        probe = textwrap.dedent(
            f"""
            import functools, json, os, socket, sys
            from nitro_llm.enclave import boot, main, runtime

            class Nsm:
                def describe_pcr(self, index):
                    return type("Pcr", (), {{"data": b"\\1" * 48}})()

            def serve(config, *, listen_address, kms, nsm):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 443))  # the KMS forwarder's port, as an unprivileged user
                    bound = True
                report = dict(uid=os.getuid(), euid=os.geteuid(), groups=os.getgroups(),
                              hosts=open("/etc/hosts").read(), bound=bound, listen=listen_address,
                              kms=[kms.endpoint, kms.forward_to], threads=config.threads)
                open("{out}/report.json", "w").write(json.dumps(report))

            real_prepare = boot.prepare
            boot.detect_platform = lambda region, port, proxy: boot.nitro_settings(region, port, proxy)
            boot.prepare = functools.partial(real_prepare, user="nobody")
            main.open_platform_nsm = lambda settings: Nsm()
            runtime.serve = serve
            sys.exit(main.main(["--config", "{config}", "--region", "eu-west-1"]))
            """
        )
        script = f'mount --bind {hosts} /etc/hosts && exec {sys.executable} -c "$0"'
        env = {"PATH": "/usr/bin:/bin", "PYTHONPATH": str(REPO)}
        done = subprocess.run(
            ["unshare", "-n", "-m", "sh", "-c", script, probe],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert done.returncode == 0, done.stderr
        report = json.loads((out / "report.json").read_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    assert report["uid"] == report["euid"] != 0
    assert report["groups"] == []
    assert report["bound"] is True
    assert report["hosts"].splitlines()[-1] == "127.0.0.1\tkms.eu-west-1.amazonaws.com"
    assert report["listen"] == "vsock:any:5000"
    assert report["kms"] == ["https://kms.eu-west-1.amazonaws.com", "vsock:3:8000"]
    assert report["threads"] == 2
    assert Path("/etc/hosts").read_text().find("kms.eu-west-1.amazonaws.com") == -1  # host untouched


def test_main_reports_a_missing_platform_and_exits_1(tmp_path, monkeypatch, caplog):
    config = tmp_path / "enclave.json"
    config.write_bytes(canonical_config(EnclaveConfig().measured()))
    real = boot.detect_platform
    device, sock = tmp_path / "dev-nsm", tmp_path / "nsm.sock"
    monkeypatch.setattr(
        boot, "detect_platform", lambda *args: real(*args, nsm_device=device, nsm_socket=sock)
    )
    monkeypatch.setattr(main.signal, "signal", lambda *_: None)  # keep pytest's own SIGTERM handling
    assert main.main(["--config", str(config)]) == 1
    assert str(device) in caplog.text and str(sock) in caplog.text and "enclave_init_failed" in caplog.text


def test_enclave_runtime_accepts_the_kms_hostname_endpoint():
    from nitro_llm.enclave.runtime import forwarder_listen_address

    assert (
        forwarder_listen_address(nitro_settings("eu-west-1").kms_endpoint)
        == f"tcp:127.0.0.1:{boot.KMS_TLS_PORT}"
    )
    assert forwarder_listen_address(local_settings().kms_endpoint) == "tcp:127.0.0.1:8443"
