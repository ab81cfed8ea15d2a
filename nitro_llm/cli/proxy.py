"""`nitro-llm proxy`: the local OpenAI-compatible proxy and web chat, on the user's machine.

Point any OpenAI client at ``http://127.0.0.1:8000/v1`` (any API key) and its questions are sealed
here, answered inside the enclave, and opened here. The protocol is chosen once, at start, as ``ask``
and ``chat`` choose it: attested (this machine verifies the enclave) when a client policy is
available, else kms, said on standard error.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from nitro_llm.cli.console import make_console
from nitro_llm.client.protocol_choice import default_policy_path
from nitro_llm.errors import NitroLLMError
from nitro_llm.transport.address import is_loopback_host

if TYPE_CHECKING:
    import httpx

    from nitro_llm.client.policy import ClientPolicy
    from nitro_llm.proxy.backend_seam import ConfidentialBackend

err = make_console(stderr=True)

PROTOCOLS = ("kms", "attested")


def _backend(
    protocol: str, config_path: Path | None, policy_path: Path | None, gateway: str | None, suite: str
) -> ConfidentialBackend:
    """The protocol's backend. Unless ``--gateway`` names one, the gateway comes from the client
    configuration, which is followed: a restarted 'nitro-llm up' (new token, perhaps a new port) is
    picked up, and its enclave verified anew (proxy/config_following.py)."""
    from nitro_llm.client.config import ClientConfig, default_config_path
    from nitro_llm.proxy.config_following import ConfigFollowingBackend

    path = config_path or default_config_path()
    if protocol == "kms":
        from nitro_llm.proxy.confidential_backends import KmsBackend

        return ConfigFollowingBackend(path, KmsBackend)
    from nitro_llm.client.policy import ClientPolicy

    policy = ClientPolicy.load(policy_path or default_policy_path())
    if gateway is not None:
        import httpx

        return _attested(
            gateway, policy, suite, "default", httpx.Client(timeout=httpx.Timeout(10.0, read=300.0))
        )

    def build(config: ClientConfig) -> ConfidentialBackend:
        # The configuration's gateway, with its API token and certificate.
        return _attested(config.gateway_url, policy, suite, config.model, config.gateway_http())

    return ConfigFollowingBackend(path, build)


def _attested(
    gateway: str, policy: ClientPolicy, suite: str, model: str, http: httpx.Client
) -> ConfidentialBackend:
    from nitro_llm.proxy.confidential_backends import AttestedBackend

    return AttestedBackend(gateway, policy, suite=suite, model_id=model, http=http)


def proxy(
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on (loopback).")] = 8000,
    protocol: Annotated[
        str | None,
        typer.Option(
            help="attested: this machine checks the enclave (needs a policy). kms: the KMS key policy does."
            " Default: attested when a policy is available, else kms."
        ),
    ] = None,
    policy: Annotated[
        Path | None,
        typer.Option(help="Attestation policy (JSON) for --protocol attested. Default: the local stack's."),
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Client configuration (JSON). Default: the one 'nitro-llm up' writes.")
    ] = None,
    gateway: Annotated[
        str | None, typer.Option(help="Gateway URL (attested); default from --config.")
    ] = None,
    hybrid: Annotated[
        bool, typer.Option(help="Attested: seal with ML-KEM-768+X25519 (post-quantum hybrid) HPKE.")
    ] = False,
    host: Annotated[
        str, typer.Option(help="Address to bind. Keep it on loopback: the proxy sees plaintext.")
    ] = ("127.0.0.1"),
) -> None:
    """Run a local OpenAI-compatible API (/v1/chat/completions, /v1/models) and a web chat at /."""
    from nitro_llm.cli.client import _choose_protocol  # the same choice, checks and note as ask/chat

    if protocol is not None and protocol not in PROTOCOLS:
        raise typer.BadParameter(f"--protocol must be one of {', '.join(PROTOCOLS)}")
    if not is_loopback_host(host):
        raise typer.BadParameter(
            "the proxy holds plaintext questions and answers; bind it to loopback (127.0.0.1 or ::1)"
        )
    suite = "mlkem768-x25519" if hybrid else "x25519"
    try:
        chosen = _choose_protocol(protocol, policy, hybrid)
        backend = _backend(chosen, config, policy, gateway, suite)
        state = backend.describe()
    except NitroLLMError as exc:
        err.print(f"[bold red]error[/] {escape(f'[{exc.code}] {exc}')}")
        raise typer.Exit(code=2) from None
    import uvicorn

    from nitro_llm.proxy.app import create_app
    from nitro_llm.proxy.verification import BLOCKED, VERIFIED, verification_panel

    probe = getattr(backend, "probe", None)
    panel = verification_panel(state, probe() if callable(probe) else None)
    badge = escape(str(panel["badge"]))
    if panel["state"] == BLOCKED:
        err.print(
            f"[bold red]BLOCKED[/] the enclave is not verified: {escape(str(state.get('failure_reason')))}"
        )
        err.print("[dim]the proxy starts anyway so the web chat can show why; nothing will be sent[/]")
    elif panel["state"] == VERIFIED:
        err.print(f"[green]{chosen}[/] protocol ready: {badge}")
    else:
        err.print(f"[yellow]{chosen}[/] protocol: {badge}")
        if panel["unreachable_reason"]:
            err.print(
                f"[dim]{escape(str(panel['unreachable_reason']))}; the web chat shows when it answers[/]"
            )
    for reason in state.get("unsafe", []) or []:
        err.print(f"[bold yellow]{reason}[/]")
    shown = f"[{host}]" if ":" in host else host
    err.print(f"web chat:   http://{shown}:{port}/")
    err.print(f"OpenAI API: http://{shown}:{port}/v1  (any API key)")
    uvicorn.run(create_app(backend), host=host, port=port, log_level="warning")


def register(app: typer.Typer) -> None:
    app.command("proxy")(proxy)
