"""`nitro-llm gateway`: run the parent-host gateway (HTTP API, KMS relay, credentials hand-off)."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.admission import AccessSettings
from nitro_llm.gateway.auth import ClientLimits, TokenRegistry, add_client
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.transport.address import is_loopback_host, parse_address

if TYPE_CHECKING:
    from nitro_llm.gateway.fleet_keys import FleetKeySource


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
        typer.Option(
            help="Local mode: the enclave role's credentials alone (the KMS emulator's enclave-role.json)."
        ),
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
    api_tokens_file: Annotated[
        Path | None,
        typer.Option(help="Require bearer API tokens listed in this file (see 'nitro-llm gateway-token')."),
    ] = None,
    rate_limit: Annotated[
        float | None, typer.Option(min=0.001, help="Requests per second per client (default: 5 with tokens).")
    ] = None,
    burst: Annotated[int | None, typer.Option(min=1, help="Requests a client may send in a burst.")] = None,
    max_concurrent: Annotated[
        int | None, typer.Option(min=1, help="Requests in flight per client (default: 4 with tokens).")
    ] = None,
    body_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client has to send the whole request body (408).")
    ] = 30.0,
    header_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a client has to send a request's headers (408).")
    ] = 10.0,
    keep_alive_timeout: Annotated[
        int, typer.Option(min=1, help="Seconds an idle keep-alive connection stays open.")
    ] = 5,
    max_connections: Annotated[
        int, typer.Option(min=1, help="Open connections at most (503 beyond).")
    ] = 1024,
    fleet_key_file: Annotated[
        Path | None,
        typer.Option(
            help="Fleet replica: the fleet key file ('nitro-llm fleet-key create'), handed to the enclave"
            " and re-read when it changes."
        ),
    ] = None,
    tls_cert: Annotated[
        Path | None,
        typer.Option(help="Serve HTTPS with this certificate (PEM; required off loopback)."),
    ] = None,
    tls_key: Annotated[Path | None, typer.Option(help="The certificate's private key (PEM).")] = None,
) -> None:
    """Run the gateway. It never sees plaintext: it relays sealed envelopes to the enclave and sealed
    answer chunks back, relays the enclave's TLS to KMS, and hands the enclave its role credentials."""
    import uvicorn

    from nitro_llm.gateway.app import create_app
    from nitro_llm.gateway.credentials import CredentialsSource, FileCredentialsSource
    from nitro_llm.gateway.seams import build_seams
    from nitro_llm.gateway.slow_clients import uvicorn_options

    if not is_loopback_host(host) and not allow_remote:
        raise typer.BadParameter(
            f"{host} is not a loopback address; pass --allow-remote to expose the gateway"
        )
    tls = check_tls(host, tls_cert, tls_key)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    source: CredentialsSource | None = None
    if credentials_file and imds:
        raise typer.BadParameter("choose one of --credentials-file and --imds")
    if credentials_file:
        source = FileCredentialsSource(credentials_file)
        try:
            source.get()  # refuse a wrong file now, not by logging a failed hand-off every second
        except NitroLLMError as exc:
            hint = "'--credentials-file'"
            raise typer.BadParameter(f"{exc.message} ({exc.hint})", param_hint=hint) from None
    elif imds:
        from nitro_llm.gateway.imds import ImdsCredentialsSource

        source = ImdsCredentialsSource()
    relay = None
    if kms_relay_listen or kms_upstream:
        if not (kms_relay_listen and kms_upstream):
            raise typer.BadParameter("--kms-relay-listen and --kms-upstream go together")
        from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS
        from nitro_llm.transport.relay import Relay

        # as many connections as vsock-proxy has workers by default (nitro_llm/kms/connections.py)
        relay = Relay(kms_relay_listen, kms_upstream, max_connections=MAX_KMS_CONNECTIONS)
        relay.start()
    try:
        parse_address(enclave)  # a typo must stop the gateway, not leave it retrying a bogus address
    except NitroLLMError as exc:
        raise typer.BadParameter(f"{exc.message} ({exc.hint})", param_hint="'--enclave'") from None
    settings = GatewaySettings(enclave=enclave, max_body_bytes=max_body_bytes, seed_route=seed_route)
    access = _access_settings(api_tokens_file, rate_limit, burst, max_concurrent, body_timeout)
    if api_tokens_file is None and not is_loopback_host(host):
        logging.getLogger("nitro_llm.gateway").warning(
            "no --api-tokens-file: anyone who can reach %s:%d can make the enclave work", host, port
        )
    bounds = uvicorn_options(
        header_timeout=header_timeout, keep_alive=keep_alive_timeout, max_connections=max_connections
    )
    fleet_keys = _fleet_key_source(fleet_key_file)
    seams = build_seams(settings, credentials=source)  # the link over --enclave, its monitor, limiter, clock
    app = create_app(
        settings,
        credentials=source,
        access=access,
        link=seams.link,
        limiter=seams.limiter,
        clock=seams.clock,
        monitor=seams.monitor,
        fleet_keys=fleet_keys,
    )
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            access_log=False,
            log_level="warning",
            # A stop (systemd, the supervisor's tests) does not wait on idle keep-alive clients.
            timeout_graceful_shutdown=10,
            **tls,
            **bounds,
        )
    finally:
        if relay:
            relay.stop()


def _fleet_key_source(path: Path | None) -> FleetKeySource | None:
    """Read the file once at start-up, so a bad one fails here rather than in the background."""
    if path is None:
        return None
    from nitro_llm.fleet.key_file import FleetKeyFile
    from nitro_llm.gateway.fleet_keys import FleetKeySource

    try:
        FleetKeyFile.load(path)
    except NitroLLMError as exc:
        raise typer.BadParameter(f"{exc.message} ({exc.hint})", param_hint="'--fleet-key-file'") from None
    return FleetKeySource(path)


def check_tls(host: str, cert: Path | None, key: Path | None) -> dict[str, Any]:
    """uvicorn's TLS arguments, checked before anything listens. Plain HTTP only on loopback: off it,
    bearer tokens and traffic metadata would cross the network in clear."""
    if (cert is None) != (key is None):
        raise typer.BadParameter("--tls-cert and --tls-key go together")
    if cert is None or key is None:
        if not is_loopback_host(host):
            raise typer.BadParameter(
                f"plain HTTP is allowed only on loopback, and {host} is not: pass --tls-cert and --tls-key "
                "('nitro-llm deploy gateway-files' makes them on an instance)"
            )
        return {}
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(cert, key)
    except (OSError, ssl.SSLError) as exc:  # the key's bytes are never echoed, only what failed
        raise typer.BadParameter(
            f"cannot use --tls-cert {cert} with --tls-key {key} ({type(exc).__name__}: "
            f"{getattr(exc, 'strerror', None) or 'not a matching PEM certificate and key'})"
        ) from None
    # Forward-secret AEAD suites only for TLS 1.2 (uvicorn's default list is every TLSv1 suite).
    return {"ssl_certfile": str(cert), "ssl_keyfile": str(key), "ssl_ciphers": "ECDHE+AESGCM:ECDHE+CHACHA20"}


def _access_settings(
    tokens_file: Path | None,
    rate: float | None,
    burst: int | None,
    concurrent: int | None,
    body_timeout: float,
) -> AccessSettings:
    from nitro_llm.gateway.admission import DEFAULT_TOKEN_LIMITS

    limits = None
    if (rate, burst, concurrent) != (None, None, None):
        base = DEFAULT_TOKEN_LIMITS if tokens_file else ClientLimits()
        limits = ClientLimits(
            rate if rate is not None else base.rate_per_second,
            burst if burst is not None else base.burst,
            concurrent if concurrent is not None else base.max_concurrent,
        )
    if tokens_file is not None:
        try:
            TokenRegistry(tokens_file)  # fail at start-up, not on the first request
        except NitroLLMError as exc:
            raise typer.BadParameter(f"{exc.message} ({exc.hint})") from None
    return AccessSettings(tokens_file=tokens_file, limits=limits, body_timeout=body_timeout)


def gateway_token(
    tokens_file: Annotated[
        Path, typer.Argument(help="The tokens file (created if missing, mode 0600; its folder must exist).")
    ],
    name: Annotated[
        str, typer.Argument(help="Client name (shown in the gateway's logs instead of the token).")
    ],
    rate_limit: Annotated[float | None, typer.Option(min=0.001, help="Requests per second.")] = None,
    burst: Annotated[int | None, typer.Option(min=1, help="Burst size.")] = None,
    max_concurrent: Annotated[int | None, typer.Option(min=1, help="Requests in flight.")] = None,
) -> None:
    """Issue an API token for a client and print it once (the file keeps only its SHA-256).
    Issuing again for the same name replaces (revokes) its old token; the gateway picks up changes
    to the file without a restart."""
    if not tokens_file.parent.is_dir():  # a mistyped path must not become a new directory tree
        raise typer.BadParameter(
            f"{tokens_file.parent} is not a directory (the tokens file is created if missing, its"
            " directory is not)",
            param_hint="'TOKENS_FILE'",
        )
    try:
        token = add_client(tokens_file, name, ClientLimits(rate_limit, burst, max_concurrent))
    except (NitroLLMError, ValueError) as exc:
        raise typer.BadParameter(str(exc)) from None
    typer.echo(token)


def register(app: typer.Typer) -> None:
    app.command("gateway")(gateway)
    app.command("gateway-token")(gateway_token)
