"""The parent instance's configuration files, rendered from the deployment config.

Each function returns ``{absolute install path: file text}``; the CLI writes them under a root
(``/`` on the instance, a scratch folder for review). The vsock-proxy allowlist holds one entry,
the region's KMS endpoint: it is the enclave's only route out, and AWS's stock allowlist (every
region's KMS, FIPS endpoints included) is wider than this deployment needs.
"""

from __future__ import annotations

from pathlib import Path

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError
from nitro_llm.transport.address import is_loopback_host

ALLOCATOR_PATH = Path("/etc/nitro_enclaves/allocator.yaml")
SYSTEMD_DIR = Path("/etc/systemd/system")
GATEWAY_UNIT = "nitro-llm-gateway.service"
VSOCK_PROXY_UNIT = "nitro-llm-vsock-proxy.service"
ENCLAVE_UNIT = "nitro-llm-enclave.service"
STOCK_VSOCK_PROXY_UNIT = "nitro-enclaves-vsock-proxy.service"
ALLOCATOR_UNIT = "nitro-enclaves-allocator.service"
FLEET_KEY_UNIT = "nitro-llm-fleet-key.service"
FLEET_KEY_TIMER = "nitro-llm-fleet-key.timer"

_HEADER = "# Written by 'nitro-llm deploy {command}'. Edit the deployment config and re-run it instead.\n"

# Hardening shared by both long-running services: neither needs to write the filesystem, gain
# privileges or load anything into the kernel.
_HARDENING = """\
NoNewPrivileges=yes
ProtectSystem=strict
ProtectHome=yes
PrivateTmp=yes
ProtectKernelTunables=yes
ProtectKernelModules=yes
ProtectKernelLogs=yes
ProtectControlGroups=yes
ProtectClock=yes
ProtectHostname=yes
RestrictNamespaces=yes
RestrictRealtime=yes
RestrictSUIDSGID=yes
LockPersonality=yes
SystemCallArchitectures=native
CapabilityBoundingSet=
AmbientCapabilities=
LimitCORE=0
"""


def systemd_quote(arg: str) -> str:
    """Quote one ExecStart word: systemd expands ``%`` specifiers and ``$`` variables itself, so
    both are escaped; words with spaces or quotes are double-quoted."""
    if not arg or any(c in arg for c in "\n\r"):
        raise DeployConfigError(f"{arg!r} cannot be passed on a systemd command line")
    escaped = arg.replace("%", "%%").replace("$", "$$")
    if any(c in escaped for c in " \t\"'\\;"):
        escaped = '"' + escaped.replace("\\", "\\\\").replace('"', '\\"') + '"'
    return escaped


def _exec(argv: list[str]) -> str:
    return " ".join(systemd_quote(a) for a in argv)


def render_allocator(cfg: DeployConfig) -> dict[Path, str]:
    text = (
        "---\n"
        + _HEADER.format(command="allocator")
        + f"# Restart {ALLOCATOR_UNIT} after changing it; the enclave needs >= 4x its EIF's size.\n"
        + f"memory_mib: {cfg.enclave.memory_mib}\n"
        + f"cpu_count: {cfg.enclave.cpu_count}\n"
    )
    return {ALLOCATOR_PATH: text}


def render_vsock_proxy_allowlist(cfg: DeployConfig) -> dict[Path, str]:
    text = (
        _HEADER.format(command="systemd")
        + f"# The enclave's only route out: {cfg.kms_host}:443, nothing else.\n"
        + "allowlist:\n"
        + f"- {{address: {cfg.kms_host}, port: 443}}\n"
    )
    return {cfg.kms_proxy.allowlist: text}


def vsock_proxy_argv(cfg: DeployConfig) -> list[str]:
    return [
        str(cfg.kms_proxy.binary),
        str(cfg.kms_proxy.port),
        cfg.kms_host,
        "443",
        "--config",
        str(cfg.kms_proxy.allowlist),
        "--num_workers",
        str(cfg.kms_proxy.workers),
    ]


def render_vsock_proxy_unit(cfg: DeployConfig) -> str:
    return (
        _HEADER.format(command="systemd")
        + "[Unit]\n"
        + f"Description=vsock-proxy for nitro-llm: the enclave's TLS to {cfg.kms_host}:443, nothing else\n"
        + "After=network-online.target\n"
        + "Wants=network-online.target\n"
        # The stock unit listens on the same vsock port with a wider allowlist.
        + f"Conflicts={STOCK_VSOCK_PROXY_UNIT}\n"
        + "\n[Service]\n"
        + "Type=simple\n"
        + f"ExecStart={_exec(vsock_proxy_argv(cfg))}\n"
        + "Restart=always\n"
        + "RestartSec=2\n"
        + "DynamicUser=yes\n"
        + "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_VSOCK\n"
        + "MemoryDenyWriteExecute=yes\n"
        + _HARDENING
        + "\n[Install]\n"
        + "WantedBy=multi-user.target\n"
    )


def gateway_argv(cfg: DeployConfig) -> list[str]:
    argv = [
        str(cfg.gateway.nitro_llm),
        "gateway",
        "--enclave",
        f"vsock:{cfg.enclave.cid}:{cfg.enclave.port}",
        "--host",
        cfg.gateway.host,
        "--port",
        str(cfg.gateway.port),
        "--imds",
    ]
    if cfg.gateway.api_tokens_file is not None:
        argv += ["--api-tokens-file", str(cfg.path(cfg.gateway.api_tokens_file))]
    if cfg.gateway.tls_cert is not None and cfg.gateway.tls_key is not None:
        argv += ["--tls-cert", str(cfg.path(cfg.gateway.tls_cert))]
        argv += ["--tls-key", str(cfg.path(cfg.gateway.tls_key))]
    if cfg.fleet is not None:
        argv += ["--fleet-key-file", str(cfg.path(cfg.fleet.key_file))]
    if not is_loopback_host(cfg.gateway.host):
        if cfg.gateway.api_tokens_file is None:
            raise DeployConfigError(
                f"the gateway listens on {cfg.gateway.host} without API tokens",
                hint="set gateway.api_tokens_file (and issue tokens with 'nitro-llm gateway-token')",
            )
        argv.append("--allow-remote")
    return argv


def _fetches_fleet_key(cfg: DeployConfig) -> bool:
    return cfg.fleet is not None and cfg.fleet.source is not None


def render_gateway_unit(cfg: DeployConfig) -> str:
    # A fleet replica's gateway pulls in the timer that keeps its fleet key file current.
    timer = f" {FLEET_KEY_TIMER}" if _fetches_fleet_key(cfg) else ""
    return (
        _HEADER.format(command="systemd")
        + "[Unit]\n"
        + "Description=nitro-llm gateway: relays sealed requests to the enclave, never sees plaintext\n"
        + f"After=network-online.target {VSOCK_PROXY_UNIT}\n"
        + f"Wants=network-online.target{timer}\n"
        + "\n[Service]\n"
        + "Type=simple\n"
        + f"User={cfg.gateway.user}\n"
        + f"Group={cfg.gateway.user}\n"
        + f"ExecStart={_exec(gateway_argv(cfg))}\n"
        + "Environment=PYTHONUNBUFFERED=1 NITRO_LLM_HOME=/var/lib/nitro-llm\n"
        + "StateDirectory=nitro-llm\n"
        + "Restart=always\n"
        + "RestartSec=2\n"
        + "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX AF_VSOCK\n"
        + _HARDENING
        + "\n[Install]\n"
        + "WantedBy=multi-user.target\n"
    )


def supervise_argv(cfg: DeployConfig, config_path: Path) -> list[str]:
    return [str(cfg.gateway.nitro_llm), "deploy", "supervise", "--config", str(config_path)]


def render_enclave_unit(cfg: DeployConfig, config_path: Path) -> str:
    """The enclave's supervisor: it verifies the EIF, starts the enclave in production mode (never
    with a console), restarts it when it dies or wedges, and terminates it when the unit stops."""
    nitro_llm = str(cfg.gateway.nitro_llm)
    return (
        _HEADER.format(command="systemd")
        + "[Unit]\n"
        + "Description=nitro-llm enclave supervisor (production mode; restarts a dead or wedged enclave)\n"
        + f"After={ALLOCATOR_UNIT} {VSOCK_PROXY_UNIT} {GATEWAY_UNIT}\n"
        + f"Requires={ALLOCATOR_UNIT}\n"
        + f"Wants={GATEWAY_UNIT}\n"
        # Skipped, not failed, until 'nitro-llm deploy install-eif' has put a verified EIF there.
        + f"ConditionPathExists={cfg.path(cfg.enclave.eif)}\n"
        + "\n[Service]\n"
        + "Type=simple\n"
        + f"ExecStart={_exec(supervise_argv(cfg, config_path))}\n"
        + f"ExecStopPost=-{_exec([nitro_llm, 'deploy', 'stop', '--config', str(config_path)])}\n"
        + "Restart=always\n"
        + "RestartSec=5\n"
        + "Environment=PYTHONUNBUFFERED=1\n"
        + "\n[Install]\n"
        + "WantedBy=multi-user.target\n"
    )


def fetch_fleet_key_argv(cfg: DeployConfig, config_path: Path) -> list[str]:
    return [str(cfg.gateway.nitro_llm), "deploy", "fetch-fleet-key", "--config", str(config_path)]


def render_fleet_key_units(cfg: DeployConfig, config_path: Path) -> dict[Path, str]:
    """A rotation reaches every instance without a hand step: a timer downloads the published fleet key
    file every ``refresh_seconds`` ('deploy fetch-fleet-key': checked, then renamed into place only when
    it changed), and the gateway re-reads the file when it changes and hands it to its enclave."""
    if cfg.fleet is None or cfg.fleet.source is None:
        return {}
    key_dir = cfg.path(cfg.fleet.key_file).parent
    service = (
        _HEADER.format(command="systemd")
        + "[Unit]\n"
        + f"Description=nitro-llm: download the wrapped fleet key (ciphertext only) from {cfg.fleet.source}\n"
        + "After=network-online.target\n"
        + "Wants=network-online.target\n"
        + "\n[Service]\n"
        + "Type=oneshot\n"
        + f"ExecStart={_exec(fetch_fleet_key_argv(cfg, config_path))}\n"
        # The AWS CLI's home: nothing there is needed (the instance role comes from IMDS).
        + "Environment=PYTHONUNBUFFERED=1 HOME=/tmp\n"
        + f"ReadWritePaths={systemd_quote(str(key_dir))}\n"
        + "RestrictAddressFamilies=AF_INET AF_INET6 AF_UNIX\n"
        + _HARDENING
    )
    timer = (
        _HEADER.format(command="systemd")
        + "[Unit]\n"
        + f"Description=nitro-llm: fetch the wrapped fleet key every {cfg.fleet.refresh_seconds} s\n"
        + "\n[Timer]\n"
        + f"OnActiveSec={cfg.fleet.refresh_seconds}\n"
        + f"OnUnitActiveSec={cfg.fleet.refresh_seconds}\n"
        + "RandomizedDelaySec=30\n"
        + "\n[Install]\n"
        + "WantedBy=timers.target\n"
    )
    return {SYSTEMD_DIR / FLEET_KEY_UNIT: service, SYSTEMD_DIR / FLEET_KEY_TIMER: timer}


def render_systemd(cfg: DeployConfig, config_path: Path) -> dict[Path, str]:
    files = {
        SYSTEMD_DIR / GATEWAY_UNIT: render_gateway_unit(cfg),
        SYSTEMD_DIR / VSOCK_PROXY_UNIT: render_vsock_proxy_unit(cfg),
        SYSTEMD_DIR / ENCLAVE_UNIT: render_enclave_unit(cfg, config_path),
        **render_fleet_key_units(cfg, config_path),
    }
    files.update(render_vsock_proxy_allowlist(cfg))
    return files


def write_files(files: dict[Path, str], root: Path) -> list[Path]:
    """Write each file at its install path under root; return where they went."""
    written = []
    for path, text in files.items():
        target = root / path.relative_to(path.anchor) if path.is_absolute() else root / path
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(text)
        target.chmod(0o644)
        written.append(target)
    return written
