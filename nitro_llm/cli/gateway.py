"""`nitro-llm gateway`: run the parent-host gateway (HTTP API, KMS relay, credentials hand-off)."""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path
from typing import Annotated

import typer

from nitro_llm.gateway.settings import GatewaySettings


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def gateway(
    enclave: Annotated[
        str, typer.Option(help="Enclave address: unix:PATH (local) or vsock:CID:PORT (Nitro).")
    ],
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port to listen on.")] = 8080,
    kms_relay_listen: Annotated[
        str | None,
        typer.Option(help="Run the KMS relay (vsock-proxy stand-in) listening here, e.g. unix:PATH."),
    ] = None,
    kms_upstream: Annotated[
        str | None, typer.Option(help="Where the KMS relay forwards to, e.g. tcp:127.0.0.1:4566.")
    ] = None,
    credentials_file: Annotated[
        Path | None,
        typer.Option(help="Local mode: the KMS emulator's credentials.json (enclave role entry)."),
    ] = None,
    imds: Annotated[
        bool, typer.Option(help="On EC2: hand the enclave the instance role from IMDSv2.")
    ] = False,
    max_body_bytes: Annotated[int, typer.Option(help="Largest sealed request accepted (413 above).")] = 8
    << 20,
    allow_remote: Annotated[bool, typer.Option(help="Allow listening on a non-loopback address.")] = False,
    seed_route: Annotated[
        bool,
        typer.Option(
            help="Accept the AWS sample's format on POST / (WEAKER: client credentials pass this host; "
            "the enclave needs --seed-compat)."
        ),
    ] = False,
) -> None:
    """Run the gateway. It never sees plaintext: it relays sealed envelopes to the enclave and sealed
    answer chunks back, relays the enclave's TLS to KMS, and hands the enclave its role credentials."""
    import uvicorn

    from nitro_llm.gateway.app import create_app
    from nitro_llm.gateway.credentials import CredentialsSource, FileCredentialsSource

    if not _is_loopback(host) and not allow_remote:
        raise typer.BadParameter(
            f"{host} is not a loopback address; pass --allow-remote to expose the gateway"
        )
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    source: CredentialsSource | None = None
    if credentials_file and imds:
        raise typer.BadParameter("choose one of --credentials-file and --imds")
    if credentials_file:
        source = FileCredentialsSource(credentials_file)
    elif imds:
        from nitro_llm.gateway.imds import ImdsCredentialsSource

        source = ImdsCredentialsSource()
    relay = None
    if kms_relay_listen or kms_upstream:
        if not (kms_relay_listen and kms_upstream):
            raise typer.BadParameter("--kms-relay-listen and --kms-upstream go together")
        from nitro_llm.transport.relay import Relay

        relay = Relay(kms_relay_listen, kms_upstream)
        relay.start()
    settings = GatewaySettings(enclave=enclave, max_body_bytes=max_body_bytes, seed_route=seed_route)
    try:
        uvicorn.run(create_app(settings, source), host=host, port=port, access_log=False, log_level="warning")
    finally:
        if relay:
            relay.stop()


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
