"""`nitro-llm deploy gateway-files|install-eif|supervise`: what the parent instance runs itself, at
first boot (the stack's UserData) and after (its systemd units, or an operator through SSM).

- ``gateway-files``: the gateway's tokens file and TLS pair, with the owner and modes it needs;
- ``install-eif``: a downloaded EIF and manifest, checked (manifest pinned by SHA-256, EIF against
  the manifest) and moved into place;
- ``supervise``: the enclave unit's main process; starts the enclave in production mode and restarts
  it when it dies or wedges (``nitro_llm.deploy.supervisor``);
- ``wait-healthy``: waits until the gateway's /healthz says the enclave answers (a fleet instance
  signals its Auto Scaling group only then);
- ``fetch-fleet-key``: downloads the published wrapped fleet key file and installs it when it changed
  (at first boot, then from a systemd timer, so a rotation reaches every instance).
"""

from __future__ import annotations

import logging
import signal
import threading
import time
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from nitro_llm.cli.deploy import ConfigOption, _fail, _load, err
from nitro_llm.errors import NitroLLMError


def gateway_files(
    config: ConfigOption = None,
    address: Annotated[
        list[str] | None,
        typer.Option(
            "--address",
            help="An address or DNS name clients reach the gateway at, for the certificate (repeatable). "
            "127.0.0.1 and localhost are always included.",
        ),
    ] = None,
    tls_only: Annotated[
        bool,
        typer.Option(
            "--tls-only",
            help="Only the TLS certificate and key: the API-tokens file is provided read-only by someone "
            "else (on Kubernetes, a Secret shared by every replica).",
        ),
    ] = False,
) -> None:
    """Create or repair the gateway's API-tokens file and TLS certificate and key (run as root, or as
    the gateway's user for files in a folder it may create)."""
    from nitro_llm.deploy.gateway_files import ensure_gateway_files

    try:
        cfg, _ = _load(config)
        steps = ensure_gateway_files(cfg, addresses=address or [], tokens=not tls_only)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    for step in steps:
        typer.echo(str(step))
    if cfg.gateway.tls_cert is not None:
        err.print(
            f"clients pin the certificate: copy {cfg.path(cfg.gateway.tls_cert)} to them as 'ca_file'",
            highlight=False,
            soft_wrap=True,
        )


def install_eif(
    eif: Annotated[Path, typer.Argument(help="The downloaded EIF.")],
    manifest: Annotated[Path, typer.Argument(help="The manifest published with it.")],
    manifest_sha256: Annotated[
        str,
        typer.Option(
            "--manifest-sha256", help="The manifest's SHA-256 as the operator published it (sha256sum)."
        ),
    ],
    config: ConfigOption = None,
) -> None:
    """Check a downloaded EIF (its manifest pinned by SHA-256, the EIF against the manifest), then
    install both where the enclave unit runs them ([enclave] eif and manifest)."""
    from nitro_llm.deploy import eif_check

    try:
        cfg, _ = _load(config)
        result = eif_check.install(cfg, eif, manifest, manifest_sha256)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    for check in result.checks:
        typer.echo(f"ok        {check.name}: {check.expected}")
    typer.echo(f"installed {cfg.path(cfg.enclave.eif)} and {cfg.path(cfg.enclave.manifest)}")


def supervise(
    config: ConfigOption = None,
    once: Annotated[bool, typer.Option("--once", help="Look and act once, then exit.")] = False,
) -> None:
    """Keep the enclave running in production mode: restart it when nitro-cli no longer lists it or the
    gateway's /healthz says it is not answering, with backoff; one log line per state change."""
    from nitro_llm.deploy.enclave_control import NitroCliControl
    from nitro_llm.deploy.supervisor import Supervisor

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg, _ = _load(config)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    supervisor = Supervisor(NitroCliControl(cfg), cfg.supervisor, clock=time.monotonic)
    if once:
        supervisor.step()
        return
    stop = threading.Event()

    def _stop(signum: int, _frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    supervisor.run(stop)


def wait_healthy(
    config: ConfigOption = None,
    timeout: Annotated[float, typer.Option(min=1, help="Seconds to wait at most.")] = 900.0,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between two looks.")] = 5.0,
) -> None:
    """Wait until the gateway's /healthz says the enclave answers (exit 0), or fail (exit 1) after
    --timeout with what it said last."""
    from nitro_llm.deploy.enclave_control import NitroCliControl
    from nitro_llm.deploy.supervisor import HEALTHY, wait_until_healthy

    try:
        cfg, _ = _load(config)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    control = NitroCliControl(cfg)
    health = wait_until_healthy(
        control.health, timeout=timeout, interval=interval, clock=time.monotonic, sleep=time.sleep
    )
    if health.status != HEALTHY:
        err.print(
            f"[bold red]error:[/] the enclave did not answer within {timeout:.0f} s: {health.status}"
            + (f" ({health.detail})" if health.detail else ""),
            soft_wrap=True,
            highlight=False,
        )
        err.print("[yellow]hint:[/] journalctl -u nitro-llm-enclave -u nitro-llm-gateway", soft_wrap=True)
        raise typer.Exit(code=1)
    typer.echo("healthy: the enclave answers through the gateway")


def fetch_fleet_key(config: ConfigOption = None) -> None:
    """Download the wrapped fleet key file from [fleet] source, check it (this fleet's KMS key, no older
    generation than the installed one) and rename it over [fleet] key_file if it changed; the gateway
    picks it up without a restart. A refused file leaves the installed one in place (exit 2)."""
    from nitro_llm.deploy.fleet_key_fetch import fetch

    try:
        cfg, _ = _load(config)
        result = fetch(cfg)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    current, previous = result.keys.current, result.keys.previous
    state = "installed" if result.changed else "unchanged"
    typer.echo(
        f"{state}: current {current.id} generation {current.generation}"
        + (f", previous {previous.id} generation {previous.generation}" if previous else "")
    )


def register(group: typer.Typer) -> None:
    group.command("gateway-files")(gateway_files)
    group.command("install-eif")(install_eif)
    group.command("supervise")(supervise)
    group.command("wait-healthy")(wait_healthy)
    group.command("fetch-fleet-key")(fetch_fleet_key)
