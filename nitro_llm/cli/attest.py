"""`nitro-llm attest`: fetch, read, verify and measure Nitro attestation documents from the command line.

Exit codes: 0 verified, 1 rejected (one line on stderr says which check failed and why; for
``fetch``: the gateway refused or sent something unusable), 2 unusable input (unreadable file, bad
hex, bad time, a maximum age that is not a sane number of seconds).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import logging
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table

from nitro_llm.attestation import (
    AttestationError,
    VerificationPolicy,
    load_root_pem,
    parse_document,
    verify_document,
)
from nitro_llm.attestation.document import MAX_DOCUMENT_SIZE, AttestationDocument
from nitro_llm.attestation.pcr import load_eif_measurements, pcr3_for_role_arn, pcr4_for_instance_id
from nitro_llm.attestation.policy import parse_hex, parse_pcr_expectation
from nitro_llm.attestation.report import printable
from nitro_llm.cli.console import make_console
from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:
    import httpx

attest_app = typer.Typer(
    name="attest",
    help="Fetch, show, verify and measure Nitro attestation documents.",
    no_args_is_help=True,
)
out_console = make_console()
err_console = make_console(stderr=True)

#: ``--max-age`` above this is no freshness check at all (real leaf certificates live about 3 hours).
MAX_AGE_LIMIT_SECONDS = 366 * 24 * 3600


def register(app: typer.Typer) -> None:
    app.add_typer(attest_app, name="attest")


def fail_usage(message: str) -> typer.Exit:
    err_console.print(f"[red]error:[/] {message}", highlight=False, markup=True)
    return typer.Exit(2)


def _read_document(path: Path) -> bytes:
    """Raw CBOR as the NSM returns it, or the same bytes base64-encoded (how documents travel in JSON)."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise fail_usage(f"cannot read {path}: {exc.strerror}") from None
    if len(data) > 4 * MAX_DOCUMENT_SIZE:
        raise fail_usage(f"{path} is {len(data)} bytes: too large for an attestation document")
    if data[:1] in (b"\x84", b"\xd2"):  # CBOR array of 4 / tag 18
        return data
    try:
        return base64.b64decode(b"".join(data.split()), validate=True)
    except (binascii.Error, ValueError):
        return data  # not base64 either: let the parser say what is wrong with it


def _parse_time(text: str | None, document: bytes) -> dt.datetime | None:
    if text is None:
        return None
    if text == "document":
        try:
            return parse_document(document).issued_at
        except AttestationError:
            return None  # verification reports the schema problem itself
    try:
        value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise fail_usage(f"--at {text!r} is not an ISO 8601 time (or 'document')") from None
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


def _setup_logging() -> None:
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")


@attest_app.command("show")
def show(
    file: Annotated[Path, typer.Argument(help="Attestation document: raw CBOR or base64.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Decode a document and print its fields. This does NOT verify it: use 'attest verify'."""
    data = _read_document(file)
    try:
        doc = parse_document(data)
    except AttestationError as exc:
        err_console.print(
            f"not a valid attestation document: {printable(exc.message)}", highlight=False, markup=False
        )
        raise typer.Exit(1) from None
    if as_json:
        out_console.print_json(json.dumps(doc.to_json()))
        return
    _print_document(doc)
    out_console.print(
        "[yellow]not verified[/]: run 'nitro-llm attest verify' to check signature, chain and PCRs"
    )


def _text(value: str) -> str:
    return escape(printable(value))


def _bytes_field(value: bytes | None) -> str:
    if value is None:
        return "null"
    shown = f"{value.hex()} ({len(value)} bytes)"
    if value and value.isascii() and value.decode("ascii").isprintable():
        shown += f' "{_text(value.decode("ascii"))}"'
    return shown


def _print_document(doc: AttestationDocument) -> None:
    fields = Table(title="attestation document (unverified)", show_header=False)
    fields.add_column("field", style="bold")
    fields.add_column("value", overflow="fold")
    fields.add_row("module_id", _text(doc.module_id))
    fields.add_row("digest", doc.digest)
    fields.add_row("timestamp", f"{doc.timestamp} ({doc.issued_at.isoformat(timespec='milliseconds')})")
    fields.add_row("debug mode", "[red]yes (PCR0-2 all zero)[/]" if doc.is_debug else "no")
    for name in ("public_key", "user_data", "nonce"):
        fields.add_row(name, _bytes_field(getattr(doc, name)))
    out_console.print(fields)
    pcrs = Table(title="PCRs (zero registers omitted)")
    pcrs.add_column("index", justify="right")
    pcrs.add_column("value", overflow="fold")
    for index, value in sorted(doc.pcrs.items()):
        if any(value) or index in (0, 1, 2):
            pcrs.add_row(str(index), value.hex())
    out_console.print(pcrs)
    chain = Table(title="certificates (root first)")
    chain.add_column("#")
    chain.add_column("subject", overflow="fold")
    chain.add_column("valid (UTC)")
    for label, cert in [*((str(i), c) for i, c in enumerate(doc.chain)), ("leaf", doc.leaf)]:
        span = f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} → {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S}"
        chain.add_row(label, _text(cert.subject.rfc4514_string()), span)
    out_console.print(chain)


@attest_app.command("verify")
def verify(
    file: Annotated[Path, typer.Argument(help="Attestation document: raw CBOR or base64.")],
    at: Annotated[
        str | None,
        typer.Option(
            help="Verify at this ISO 8601 time, or 'document' for its own timestamp (default: now)."
        ),
    ] = None,
    expect_pcr: Annotated[
        list[str] | None, typer.Option("--expect-pcr", help="Expected PCR as N=HEX; repeatable.")
    ] = None,
    measurements: Annotated[
        Path | None,
        typer.Option(help="Expect PCR0/1/2(/8) from nitro-cli build-enclave or describe-eif JSON output."),
    ] = None,
    nonce: Annotated[str | None, typer.Option(help="Expected nonce, hex.")] = None,
    user_data: Annotated[str | None, typer.Option(help="Expected user_data, hex.")] = None,
    public_key: Annotated[str | None, typer.Option(help="Expected public_key, hex.")] = None,
    max_age: Annotated[float | None, typer.Option(help="Maximum document age in seconds.")] = None,
    root: Annotated[
        list[Path] | None,
        typer.Option(help="Trust this root PEM instead of the AWS Nitro root (UNSAFE outside local mode)."),
    ] = None,
    allow_debug: Annotated[
        bool, typer.Option(help="Accept debug-mode documents (PCR0-2 zero). UNSAFE: development only.")
    ] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print the report as JSON.")] = False,
) -> None:
    """Verify a document: chain to the pinned root, signature, debug mode, and your expectations."""
    _setup_logging()
    if max_age is not None and not (math.isfinite(max_age) and 0 < max_age <= MAX_AGE_LIMIT_SECONDS):
        raise fail_usage(f"--max-age must be a number of seconds above 0 and at most {MAX_AGE_LIMIT_SECONDS}")
    data = _read_document(file)
    try:
        expected = dict(parse_pcr_expectation(text) for text in expect_pcr or [])
        if measurements is not None:
            expected = {**load_eif_measurements(measurements), **expected}
        policy = VerificationPolicy(
            expected_pcrs=expected,
            allow_debug=allow_debug,
            nonce=None if nonce is None else parse_hex(nonce, what="--nonce"),
            user_data=None if user_data is None else parse_hex(user_data, what="--user-data"),
            public_key=None if public_key is None else parse_hex(public_key, what="--public-key"),
            max_age=None if max_age is None else dt.timedelta(seconds=max_age),
        )
        roots = [load_root_pem(path) for path in root] if root else None
    except NitroLLMError as exc:
        raise fail_usage(str(exc)) from None
    when = _parse_time(at, data)
    try:
        report = verify_document(data, roots=roots, at=when, policy=policy)
    except AttestationError as exc:
        if as_json and exc.report is not None:
            out_console.print_json(json.dumps({**exc.report.to_json(), "error": exc.to_wire()}))
        elif exc.report is not None:
            out_console.print(exc.report.to_table())
        err_console.print(
            f"REJECTED ({exc.check}): {printable(str(exc))}", highlight=False, markup=False, soft_wrap=True
        )
        raise typer.Exit(1) from None
    if as_json:
        out_console.print_json(report.to_json_text())
    else:
        out_console.print(report.to_table())


@attest_app.command("fetch")
def fetch(
    gateway: Annotated[
        str | None,
        typer.Option(help="Gateway URL. Default: the client configuration's, with its API token."),
    ] = None,
    nonce: Annotated[
        str | None,
        typer.Option(help="Nonce for the enclave to sign into the document, hex. Default: 32 random bytes."),
    ] = None,
    out: Annotated[
        Path, typer.Option("--out", help="Where to write the document (raw CBOR); '-' for standard output.")
    ] = Path("attestation.cbor"),
    config: Annotated[
        Path | None,
        typer.Option(help="Client configuration (JSON). Default: the one 'nitro-llm up' writes."),
    ] = None,
    suite: Annotated[str, typer.Option(help="The session key's HPKE suite to attest.")] = "x25519",
) -> None:
    """Fetch the enclave's attestation document from the gateway (GET /v1/attestation) for
    'nitro-llm attest verify'. Nothing is checked here: the gateway is untrusted until you verify."""
    from nitro_llm.protocol.attested_wire import MAX_NONCE_SIZE, MIN_NONCE_SIZE, SUITES

    if suite not in SUITES:
        raise fail_usage(f"--suite must be one of {', '.join(SUITES)}")
    if nonce is None:
        challenge = os.urandom(32)
    else:
        try:
            challenge = parse_hex(nonce, what="--nonce")
        except NitroLLMError as exc:
            raise fail_usage(str(exc)) from None
        if not MIN_NONCE_SIZE <= len(challenge) <= MAX_NONCE_SIZE:
            raise fail_usage(f"--nonce must be {MIN_NONCE_SIZE} to {MAX_NONCE_SIZE} bytes")
    if str(out) == "-" and sys.stdout.isatty():
        raise fail_usage("the document is binary: pass --out FILE, or redirect standard output")
    try:
        url, client = _gateway(gateway, config)
    except NitroLLMError as exc:
        raise fail_usage(str(exc)) from None
    try:
        document = _fetch_document(url, client, challenge, suite)
    except NitroLLMError as exc:
        err_console.print(f"error [{exc.code}] {exc}", highlight=False, markup=False)
        raise typer.Exit(1) from None
    if str(out) == "-":
        sys.stdout.buffer.write(document)
        sys.stdout.buffer.flush()
    else:
        try:
            out.write_bytes(document)
        except OSError as exc:
            raise fail_usage(f"cannot write {out}: {exc.strerror}") from None
    where = "standard output" if str(out) == "-" else str(out)
    err_console.print(
        f"wrote the attestation document ({len(document)} bytes, unverified) to {where}",
        highlight=False,
        markup=False,
    )
    err_console.print(
        f"verify it: nitro-llm attest verify {'FILE' if str(out) == '-' else out} --nonce {challenge.hex()}"
        " --max-age 300 --expect-pcr 0=<the PCR0 you expect> (and 1=, 2=)",
        highlight=False,
        markup=False,
    )


def _gateway(gateway: str | None, config_path: Path | None) -> tuple[str, httpx.Client]:
    """The gateway's URL and a client for it: with the API token and certificate only when the URL is
    the configuration's own (as 'ask' does: a token is never sent to a gateway the configuration does
    not name)."""
    import httpx

    if gateway is not None:
        return gateway.rstrip("/"), httpx.Client(timeout=httpx.Timeout(10.0, read=30.0))
    from nitro_llm.client.config import ClientConfig, default_config_path

    config = ClientConfig.load(config_path or default_config_path())
    return config.gateway_url.rstrip("/"), config.gateway_http(read_timeout=30.0)


def _fetch_document(url: str, client: httpx.Client, nonce: bytes, suite: str) -> bytes:
    """The document of the gateway's bundle, read with the client's capped reader (``ask`` and the
    proxy read it the same way): a hostile gateway's endless body is cut off while it streams."""
    import httpx

    from nitro_llm.client.errors import GatewayUnreachable
    from nitro_llm.client.wire import fetch_attestation_bundle
    from nitro_llm.protocol.attested_wire import decode_attestation_bundle

    try:
        with client as http:
            body = fetch_attestation_bundle(http, url, nonce, suite)
    except httpx.InvalidURL:
        raise GatewayUnreachable(f"{url[:100]!r} is not a usable gateway URL") from None
    document, _descriptor = decode_attestation_bundle(body)
    return document


@attest_app.command("pcr")
def pcr(
    measurements: Annotated[
        Path | None, typer.Option(help="JSON printed by nitro-cli build-enclave / describe-eif.")
    ] = None,
    role_arn: Annotated[str | None, typer.Option(help="Compute PCR3 from the parent's IAM role ARN.")] = None,
    instance_id: Annotated[
        str | None, typer.Option(help="Compute PCR4 from the parent's instance ID.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print PCRs: from nitro-cli measurements, and PCR3/PCR4 computed as Nitro computes them."""
    values: dict[int, bytes] = {}
    try:
        if measurements is not None:
            values.update(load_eif_measurements(measurements))
    except NitroLLMError as exc:
        raise fail_usage(str(exc)) from None
    if role_arn is not None:
        values[3] = pcr3_for_role_arn(role_arn)
    if instance_id is not None:
        values[4] = pcr4_for_instance_id(instance_id)
    if not values:
        raise fail_usage("give --measurements FILE, --role-arn ARN and/or --instance-id ID")
    print_pcrs(dict(sorted(values.items())), as_json)


def print_pcrs(values: dict[int, bytes], as_json: bool) -> None:
    if as_json:
        out_console.print_json(json.dumps({f"PCR{i}": v.hex() for i, v in values.items()}))
        return
    for index, value in values.items():
        out_console.print(f"PCR{index} {value.hex()}", highlight=False, markup=False, soft_wrap=True)
