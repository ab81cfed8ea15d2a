"""allocator.yaml, the vsock-proxy allowlist and the systemd units rendered from the config."""

from __future__ import annotations

import configparser
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from nitro_llm.deploy import host_files
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError

FLEET = {
    "kms_key_arn": "arn:aws:kms:eu-west-1:123456789012:key/1234abcd-12ab-34cd-56ef-1234567890ab",
    "source": "s3://nitro-llm-fleet-key-123456789012/fleet-key.json",
}


def cfg(tmp_path: Path, **sections: dict) -> DeployConfig:
    return DeployConfig.from_mapping({"region": "eu-west-1", **sections}, tmp_path)


def unit(text: str) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=True)
    parser.optionxform = str  # systemd keys are case-sensitive
    parser.read_string(text)
    return parser


def test_allocator_yaml_matches_the_config(tmp_path):
    files = host_files.render_allocator(cfg(tmp_path, enclave={"cpu_count": 4, "memory_mib": 6144}))
    ((path, text),) = files.items()
    assert path == Path("/etc/nitro_enclaves/allocator.yaml")
    assert yaml.safe_load(text) == {"memory_mib": 6144, "cpu_count": 4}


def test_allowlist_holds_only_the_regions_kms(tmp_path):
    c = cfg(tmp_path)
    ((path, text),) = host_files.render_vsock_proxy_allowlist(c).items()
    assert path == Path("/etc/nitro_enclaves/nitro-llm-vsock-proxy.yaml")
    assert yaml.safe_load(text) == {"allowlist": [{"address": "kms.eu-west-1.amazonaws.com", "port": 443}]}


def test_vsock_proxy_unit_relays_only_to_kms(tmp_path):
    c = cfg(tmp_path, kms_proxy={"port": 8001})
    u = unit(host_files.render_vsock_proxy_unit(c))
    argv = shlex.split(u["Service"]["ExecStart"])
    assert argv == host_files.vsock_proxy_argv(c)
    assert argv[:4] == ["/usr/bin/vsock-proxy", "8001", "kms.eu-west-1.amazonaws.com", "443"]
    assert argv[argv.index("--config") + 1] == str(c.kms_proxy.allowlist)
    assert u["Unit"]["Conflicts"] == "nitro-enclaves-vsock-proxy.service"
    assert u["Service"]["DynamicUser"] == "yes"
    assert u["Install"]["WantedBy"] == "multi-user.target"


def test_gateway_unit_uses_imds_and_the_enclaves_vsock_address(tmp_path):
    c = cfg(tmp_path, enclave={"cid": 20, "port": 5001}, gateway={"port": 9000})
    u = unit(host_files.render_gateway_unit(c))
    argv = shlex.split(u["Service"]["ExecStart"])
    assert argv[:2] == ["/opt/nitro-llm/venv/bin/nitro-llm", "gateway"]
    assert argv[argv.index("--enclave") + 1] == "vsock:20:5001"
    assert argv[argv.index("--port") + 1] == "9000"
    assert "--imds" in argv and "--allow-remote" in argv
    assert u["Service"]["User"] == "nitro-llm"
    assert u["Service"]["NoNewPrivileges"] == "yes"
    assert argv[argv.index("--api-tokens-file") + 1] == "/etc/nitro-llm/gateway/api-tokens.json"
    assert argv[argv.index("--tls-cert") + 1] == "/etc/nitro-llm/gateway/tls.crt"
    assert argv[argv.index("--tls-key") + 1] == "/etc/nitro-llm/gateway/tls.key"
    loopback = cfg(tmp_path, gateway={"host": "127.0.0.1"})
    assert "--allow-remote" not in host_files.gateway_argv(loopback)


@pytest.mark.parametrize("missing", ["api_tokens_file", "tls_cert"])
def test_exposed_gateway_without_tokens_or_tls_is_refused(tmp_path, missing):
    off = {"api_tokens_file": None} if missing == "api_tokens_file" else {"tls_cert": None, "tls_key": None}
    with pytest.raises(DeployConfigError, match=f"not loopback\\) needs {missing}"):
        cfg(tmp_path, gateway={"host": "0.0.0.0", **off})
    plain = host_files.gateway_argv(
        cfg(
            tmp_path,
            gateway={"host": "127.0.0.1", "api_tokens_file": None, "tls_cert": None, "tls_key": None},
        )
    )
    assert "--api-tokens-file" not in plain and "--tls-cert" not in plain  # loopback may be plain


def test_tls_cert_and_key_go_together(tmp_path):
    with pytest.raises(DeployConfigError, match="tls_cert and tls_key go together"):
        cfg(tmp_path, gateway={"host": "127.0.0.1", "tls_key": None})


def test_gateway_argv_is_accepted_by_the_gateway_command(tmp_path):
    """The unit's flags must exist on 'nitro-llm gateway' (a renamed flag would crash-loop the unit)."""
    import typer.main

    from nitro_llm.cli.main import full_app

    app = full_app()

    command = typer.main.get_command(app).commands["gateway"]
    known = {opt for p in command.params for opt in p.opts}
    flags = [a for a in host_files.gateway_argv(cfg(tmp_path, fleet=FLEET))[2:] if a.startswith("--")]
    assert set(flags) <= known, set(flags) - known


def test_a_fleet_replicas_gateway_gets_the_key_file_and_a_timer_keeps_it_current(tmp_path):
    plain = host_files.render_systemd(cfg(tmp_path), tmp_path / "c.toml")
    assert "--fleet-key-file" not in plain[host_files.SYSTEMD_DIR / host_files.GATEWAY_UNIT]
    by_hand = cfg(tmp_path, fleet={"kms_key_arn": FLEET["kms_key_arn"], "key_file": "keys/fleet.json"})
    argv = host_files.gateway_argv(by_hand)
    assert argv[argv.index("--fleet-key-file") + 1] == str(tmp_path / "keys" / "fleet.json")
    assert host_files.render_fleet_key_units(by_hand, tmp_path / "c.toml") == {}  # no source: no timer

    c = cfg(tmp_path, fleet={**FLEET, "refresh_seconds": 120})
    files = host_files.render_systemd(c, Path("/etc/nitro-llm/deploy.toml"))
    gateway = unit(files[host_files.SYSTEMD_DIR / host_files.GATEWAY_UNIT])
    assert host_files.FLEET_KEY_TIMER in gateway["Unit"]["Wants"].split()  # started with the gateway
    service = unit(files[host_files.SYSTEMD_DIR / host_files.FLEET_KEY_UNIT])["Service"]
    assert shlex.split(service["ExecStart"])[1:] == [
        "deploy",
        "fetch-fleet-key",
        "--config",
        "/etc/nitro-llm/deploy.toml",
    ]
    assert service["Type"] == "oneshot" and service["ReadWritePaths"] == "/etc/nitro-llm"
    assert service["ProtectSystem"] == "strict"  # it may write the key file's folder, nothing else
    timer = unit(files[host_files.SYSTEMD_DIR / host_files.FLEET_KEY_TIMER])["Timer"]
    assert timer["OnActiveSec"] == timer["OnUnitActiveSec"] == "120"


def test_enclave_unit_supervises_production_mode_after_the_allocator(tmp_path):
    c = cfg(tmp_path)
    u = unit(host_files.render_enclave_unit(c, Path("/etc/nitro-llm/deploy.toml")))
    start = shlex.split(u["Service"]["ExecStart"])
    assert start[1:] == ["deploy", "supervise", "--config", "/etc/nitro-llm/deploy.toml"]
    assert not {"--debug-mode", "--attach-console"} & set(start)
    # A supervisor that dies is restarted; stopping the unit terminates the enclave.
    assert u["Service"]["Type"] == "simple" and u["Service"]["Restart"] == "always"
    stop = shlex.split(u["Service"]["ExecStopPost"].lstrip("-"))
    assert stop[1:] == ["deploy", "stop", "--config", "/etc/nitro-llm/deploy.toml"]
    assert u["Unit"]["Requires"] == "nitro-enclaves-allocator.service"
    assert u["Unit"]["ConditionPathExists"] == str(c.path(c.enclave.eif))


def test_systemd_quoting_escapes_specifiers_and_spaces():
    assert host_files.systemd_quote("/opt/x") == "/opt/x"
    assert host_files.systemd_quote("100%") == "100%%"
    assert host_files.systemd_quote("$HOME") == "$$HOME"
    assert host_files.systemd_quote("/opt/my dir/bin") == '"/opt/my dir/bin"'
    with pytest.raises(DeployConfigError):
        host_files.systemd_quote("a\nb")


def test_write_files_under_a_root(tmp_path):
    c = cfg(tmp_path)
    written = host_files.write_files(host_files.render_systemd(c, tmp_path / "c.toml"), tmp_path / "root")
    names = sorted(p.relative_to(tmp_path / "root").as_posix() for p in written)
    assert names == [
        "etc/nitro_enclaves/nitro-llm-vsock-proxy.yaml",
        "etc/systemd/system/nitro-llm-enclave.service",
        "etc/systemd/system/nitro-llm-gateway.service",
        "etc/systemd/system/nitro-llm-vsock-proxy.service",
    ]


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze not installed")
def test_units_pass_systemd_analyze_verify(tmp_path):
    # Point the executables at real files: verify checks that ExecStart binaries exist.
    c = cfg(tmp_path, kms_proxy={"binary": "/bin/true"}, gateway={"nitro_llm": sys.executable}, fleet=FLEET)
    root = tmp_path / "root"
    host_files.write_files(host_files.render_systemd(c, tmp_path / "c.toml"), root)
    units = root / "etc/systemd/system"
    for stock in (host_files.ALLOCATOR_UNIT, host_files.STOCK_VSOCK_PROXY_UNIT):  # shipped by nitro-cli
        (units / stock).write_text("[Unit]\nDescription=stand-in\n[Service]\nExecStart=/bin/true\n")
    ours = sorted(str(p) for p in units.glob("nitro-llm-*.*"))
    assert len(ours) == 5  # gateway, vsock-proxy, enclave, the fleet key's service and timer
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", *ours],
        env={"SYSTEMD_UNIT_PATH": f"{units}:", "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == "", done.stderr  # no unknown keys or bad values either
