"""`nitro-llm demo`: the main job, shown party by party.

Starts the local stack, asks a PHI-laden question, and puts side by side what the client, the gateway
and KMS each saw; then shows the two refusals that make the design worth having: the parent host's
credentials without attestation, and an enclave image whose code was changed by one line.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm.errors import NitroLLMError
from nitro_llm_dev.local.stack import LocalStack
from nitro_llm_dev.local.tampered import make_tampered_copy

SAMPLE_QUESTION = (
    "Patient Jane Roe (DOB 1961-04-02, MRN 448-21-9937) has atrial fibrillation and takes warfarin "
    "5 mg daily. She asks whether she can take ibuprofen for knee pain. What should she be told?"
)


def _hex_excerpt(data: bytes, n: int = 48) -> str:
    return data[:n].hex(" ") + (" …" if len(data) > n else "")


def ask_and_show(stack: LocalStack, console: Console, question: str, max_tokens: int) -> dict[str, Any]:
    conv = KmsConversation(stack.client_config())
    console.print(
        Panel(Text(question), title="[bold]1. client[/] — plaintext, on the data owner's machine only")
    )
    console.print("[bold]enclave answer (streamed, decrypted on the client):[/]")
    started = time.monotonic()
    parts: list[str] = []
    first_token_s: float | None = None
    for chunk in conv.stream([{"role": "user", "content": question}], max_tokens=max_tokens):
        if chunk.text and first_token_s is None:
            first_token_s = time.monotonic() - started
        parts.append(chunk.text)
        console.print(chunk.text, end="", markup=False, highlight=False, soft_wrap=True)
    console.print()
    total_s = time.monotonic() - started
    wire = conv.last_wire
    gw = Table.grid(padding=(0, 1))
    gw.add_row("request body", f"{len(wire.envelope)} bytes, CBOR envelope (AES-256-GCM ciphertext)")
    gw.add_row("first bytes", _hex_excerpt(wire.envelope))
    gw.add_row("header (AAD)", json.dumps(dict(wire.header)))
    gw.add_row("answer", f"{wire.answer_bytes} bytes in {wire.frames} sealed frames")
    gw.add_row("plaintext seen", "[bold green]none[/] (the gateway holds no key that opens these)")
    kms = Table.grid(padding=(0, 1))
    kms.add_row("key", stack.key_arn)
    for idx in ("0", "1", "2"):
        kms.add_row(f"PCR{idx} required", stack.pcrs[idx])
    kms.add_row("released to", "the enclave, as CMS EnvelopedData for its attested RSA key (Recipient)")
    console.print(Panel(gw, title="[bold]2. gateway[/] — the untrusted parent host carried only this"))
    console.print(Panel(kms, title="[bold]3. KMS[/] — data key released only against these measurements"))
    timing = f"first token {first_token_s or total_s:.2f} s, answer complete {total_s:.2f} s"
    console.print(
        Panel(Text("".join(parts).strip()), title=f"[bold]4. client[/] — decrypted answer ({timing})")
    )
    return {"answer": "".join(parts), "envelope_bytes": len(wire.envelope)}


def show_parent_refused(stack: LocalStack, console: Console) -> str:
    """The parent holds the enclave role's credentials (as on EC2). Without an attestation document
    KMS must refuse it the data key of a real conversation."""
    from nitro_llm.kms.client import make_kms_client

    conv = KmsConversation(stack.client_config())
    header, envelope = conv.seal([{"role": "user", "content": SAMPLE_QUESTION}])
    parent = make_kms_client(stack.kms_url, stack.credentials()["enclave_role"], stack.region)
    try:
        parent.decrypt(CiphertextBlob=envelope.edk, EncryptionContext=header.encryption_context())
    except parent.exceptions.ClientError as exc:
        outcome = f"{exc.response['Error']['Code']}: {exc.response['Error'].get('Message', '')}"
    else:  # pragma: no cover - would be a security failure, shown loudly
        outcome = "DECRYPTED — the key policy does not protect this key"
    console.print(
        Panel(
            Text(outcome, style="bold green" if "Denied" in outcome else "bold red"),
            title="[bold]refusal 1[/] — the parent asks KMS with the enclave role, no attestation",
        )
    )
    return outcome


def show_tampered_refused(stack: LocalStack, console: Console) -> tuple[str, str]:
    """Run a real enclave whose code changed by one line; KMS must refuse it the key.

    With the enclave image (the default) it is a copy of the running image with a comment line
    appended to one of its modules, packed into its own ramdisk and EIF (so its PCRs are that
    image's); with ``--enclave-from source``, a copy of the source tree with the same line."""
    with tempfile.TemporaryDirectory(prefix="nitro-llm-tampered-") as tmp:
        if stack.runs_image:
            reply, pcrs = _run_tampered_image(stack)
        else:
            reply, pcrs = _run_tampered_source(stack, Path(tmp))
    if reply.get("t") == "error":
        outcome = f"{reply.get('code')}: {reply.get('message')}"
    else:  # pragma: no cover - would be a security failure
        outcome = "ANSWERED — a modified enclave obtained the key"
    table = Table.grid(padding=(0, 1))
    table.add_row("PCR0 expected", stack.pcrs["0"])
    table.add_row("PCR0 tampered", pcrs["0"])
    table.add_row("outcome", Text(outcome, style="bold green" if reply.get("t") == "error" else "bold red"))
    what = "the enclave image" if stack.runs_image else "the source-tree enclave"
    console.print(
        Panel(table, title=f"[bold]refusal 2[/] — {what}, one line of code changed, asks for the key")
    )
    return pcrs["0"], outcome


def _ask_by_hand(stack: LocalStack, sock_path: Path) -> dict[str, Any]:
    """The gateway's job, done by hand: hand the enclave its credentials, then one sealed question."""
    from nitro_llm.protocol.frame_codec import encode_frame, read_frame
    from nitro_llm.transport import connect

    creds = stack.credentials()["enclave_role"]
    with connect(f"unix:{sock_path}", 10) as s:
        s.sendall(
            encode_frame(
                {
                    "t": "credentials",
                    **{
                        k: creds.get(k)
                        for k in ("access_key_id", "secret_access_key", "session_token", "expiration")
                    },
                }
            )
        )
        read_frame(s)
    conv = KmsConversation(stack.client_config())
    _, envelope = conv.seal([{"role": "user", "content": SAMPLE_QUESTION}], max_tokens=16)
    with connect(f"unix:{sock_path}", 10) as s:
        s.settimeout(120)
        s.sendall(encode_frame({"t": "infer", "envelope": envelope.to_cbor()}))
        return read_frame(s) or {}


def _run_tampered_image(stack: LocalStack) -> tuple[dict[str, Any], dict[str, str]]:
    from nitro_llm.transport.relay import Relay
    from nitro_llm_dev.local.image_enclave import append_comment, derive_image, images_dir, share_with_enclave
    from nitro_llm_dev.local.processes import wait_until

    assert stack.enclave_image is not None
    with tempfile.TemporaryDirectory(prefix="tampered-", dir=images_dir()) as tmp:  # same disk: hard links
        image = derive_image(stack.enclave_image, Path(tmp), append_comment())
        sockets = stack.run_dir / "tampered-enclave"
        proc, nsm = stack.start_image_enclave("tampered-enclave", image, sockets)
        relay = Relay(f"unix:{sockets / 'kms-relay.sock'}", "tcp:" + stack.kms_url.removeprefix("http://"))
        relay.start()  # the vsock-proxy stand-in, as the gateway runs it for the real enclave
        try:
            share_with_enclave(sockets / "kms-relay.sock")
            sock_path = sockets / "enclave.sock"
            wait_until(sock_path.exists, what="the tampered enclave to listen", timeout=120, process=proc)
            reply = _ask_by_hand(stack, sock_path)
        finally:
            proc.stop()
            relay.stop()
            nsm.stop()
    return reply, image.pcr_hex()


def _run_tampered_source(stack: LocalStack, tmp: Path) -> tuple[dict[str, Any], dict[str, str]]:
    from nitro_llm_dev.local.processes import ManagedProcess, isolated_argv, wait_until

    code = make_tampered_copy(tmp)
    sock_path = stack.run_dir / "tampered-enclave.sock"
    sock_path.unlink(missing_ok=True)
    argv, nsm, pcrs = stack.prepare_enclave("tampered-enclave", stack.enclave, sock_path, code)
    proc = ManagedProcess(
        "tampered-enclave",
        isolated_argv(argv) if stack.isolated else argv,
        stack.logs / "tampered-enclave.log",
        env=code.env,
        cwd=code.cwd,
    )
    proc.start()
    try:
        wait_until(sock_path.exists, what="the tampered enclave to listen", timeout=120, process=proc)
        reply = _ask_by_hand(stack, sock_path)
    finally:
        proc.stop()
        nsm.stop()
    return reply, pcrs


def run_demo(stack: LocalStack, console: Console, question: str, max_tokens: int) -> None:
    try:
        with console.status("starting the local stack…") as status:
            stack.progress = lambda msg: status.update(f"starting: {msg}")
            stack.start()
        console.print(
            Panel(
                Group(
                    Text(f"KMS emulator  {stack.kms_url}"),
                    Text(f"gateway       {stack.gateway_url}"),
                    Text(f"enclave       {stack.enclave_label()}"),
                    *(
                        [Text(f"image         {stack.enclave_image.directory}")]
                        if stack.enclave_image
                        else []
                    ),
                    Text(
                        "              unix socket (vsock stand-in), "
                        + ("network namespace with lo only" if stack.isolated else "NOT network-isolated")
                    ),
                    Text(f"logs          {stack.logs}"),
                ),
                title="local stack up",
            )
        )
        ask_and_show(stack, console, question, max_tokens)
        show_parent_refused(stack, console)
        with console.status("building and running a tampered copy of the enclave…"):
            show_tampered_refused(stack, console)
    except NitroLLMError as exc:
        # Escaped and on one line: rich would take "[code]" for a style tag, and wrap the paths and URLs.
        console.print(f"[bold red]demo failed[/] {escape(f'[{exc.code}] {exc}')}", soft_wrap=True)
        raise
    finally:
        stack.stop()
