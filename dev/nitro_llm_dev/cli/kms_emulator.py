"""`nitro-llm kms-emulator`: run the local, attestation-aware AWS KMS emulator."""

from __future__ import annotations

import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from nitro_llm.errors import NitroLLMError
from nitro_llm.transport.address import is_loopback_host


def _load_roots(paths: list[Path]) -> list[object] | None:
    if not paths:
        return None  # AWS's Nitro root, as AWS KMS trusts
    from cryptography import x509

    roots: list[object] = []
    for path in paths:
        try:
            roots.extend(x509.load_pem_x509_certificates(path.read_bytes()))
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(
                f"{path}: not a readable PEM certificate ({type(exc).__name__})"
            ) from None
    return roots


def _write_port_file(path: Path, port: int) -> None:
    """Atomically, so a process polling for the file never reads half a number."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(f"{port}\n")
    os.replace(tmp, path)


def kms_emulator(
    host: Annotated[
        str, typer.Option(help="Address to listen on (loopback unless --allow-remote).")
    ] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TCP port; 0 picks a free one (see --port-file).")] = 0,
    state_dir: Annotated[
        Path | None,
        typer.Option(help="Where keys, policies and credentials.json live (default: $NITRO_LLM_HOME/kms)."),
    ] = None,
    trust_root: Annotated[
        list[Path] | None,
        typer.Option(
            help="PEM root trusted for Recipient attestation documents (repeatable). Default: the AWS "
            "Nitro root only. Local mode passes the dev CA root; never do that in production."
        ),
    ] = None,
    port_file: Annotated[
        Path | None, typer.Option(help="Write the listening port here once the socket is bound.")
    ] = None,
    region: Annotated[
        str, typer.Option(help="The region this KMS serves (SigV4 scope, key ARNs).")
    ] = "us-east-1",
    allow_remote: Annotated[bool, typer.Option(help="Allow listening on a non-loopback address.")] = False,
    verbose: Annotated[bool, typer.Option(help="Log HTTP-level debug lines too.")] = False,
) -> None:
    """Run the KMS emulator: the real KMS JSON protocol with SigV4, key policies and Recipient attestation.

    boto3 talks to it unchanged via endpoint_url. On first start it issues an admin, a client user and
    the enclave instance role into STATE_DIR/credentials.json.
    """
    from nitro_llm.paths import state_dir as default_state_dir
    from nitro_llm_dev.kms_emulator import EmulatorConfig, EmulatorServer

    if not is_loopback_host(host) and not allow_remote:
        raise typer.BadParameter(
            f"{host} is not a loopback address; pass --allow-remote to expose the emulator"
        )
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    config = EmulatorConfig(
        state_dir=state_dir or default_state_dir() / "kms",
        region=region,
        host=host,
        port=port,
        trust_roots=_load_roots(trust_root or []),  # type: ignore[arg-type]
    )
    try:
        server = EmulatorServer(config)
    except NitroLLMError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(code=2) from None
    except OSError as exc:
        typer.echo(f"error: cannot listen on {host}:{port} ({exc.strerror})", err=True)
        raise typer.Exit(code=2) from None

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    server.start()
    if port_file is not None:
        _write_port_file(port_file, server.port)
    typer.echo(f"listening on {server.url}")
    typer.echo(f"credentials: {config.state_dir / 'credentials.json'}")
    while not stop.wait(timeout=1.0):
        pass
    server.shutdown()


def register(app: typer.Typer) -> None:
    app.command("kms-emulator")(kms_emulator)
