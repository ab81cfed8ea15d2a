"""`nitro-llm ask` and `nitro-llm chat`: the data owner's commands. All decryption happens here."""

from __future__ import annotations

import sys
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:
    from nitro_llm.client.protocols import Conversation

err = Console(stderr=True)

ConfigOpt = Annotated[
    Path | None,
    typer.Option(
        help="Client configuration (JSON). Default: the one 'nitro-llm up' writes for the local stack."
    ),
]
MaxTokensOpt = Annotated[int, typer.Option(min=1, max=4096, help="Most tokens to generate per answer.")]
TemperatureOpt = Annotated[float, typer.Option(min=0.0, max=2.0, help="0 = greedy (deterministic).")]
SeedOpt = Annotated[
    int | None, typer.Option(help="Sampling seed, for reproducible answers at temperature > 0.")
]
SystemOpt = Annotated[str | None, typer.Option(help="System prompt for the model.")]
ProtocolOpt = Annotated[
    str | None,
    typer.Option(
        help="attested: this machine verifies the enclave (needs a policy). kms: the KMS key policy does."
        " Default: attested when a policy is available, else kms."
    ),
]
PolicyOpt = Annotated[
    Path | None,
    typer.Option(help="Client policy (JSON) for the attested protocol. Default: the local stack's."),
]
GatewayOpt = Annotated[
    str | None, typer.Option(help="Gateway URL for the attested protocol. Default: from --config.")
]
HybridOpt = Annotated[
    bool, typer.Option(help="Attested: seal with ML-KEM-768+X25519 (post-quantum hybrid) HPKE.")
]


def _fail(exc: NitroLLMError) -> typer.Exit:
    err.print(_error_line(exc))
    return typer.Exit(code=2)


def _error_line(exc: NitroLLMError) -> str:
    """Escaped: the code in brackets would otherwise be eaten as a rich style tag, and a message may
    carry text from a remote peer."""
    return f"[bold red]error[/] {escape(f'[{exc.code}] {exc}')}"


def _conversation(
    config_path: Path | None, protocol: str | None, policy: Path | None, gateway: str | None, hybrid: bool
) -> Conversation:
    from nitro_llm.client.protocols import choose_protocol, open_conversation

    return open_conversation(
        choose_protocol(protocol, policy),
        config_path=config_path,
        policy_path=policy,
        gateway=gateway,
        suite="mlkem768-x25519" if hybrid else None,
    )


def ask(
    question: Annotated[str, typer.Argument(help="The question; use '-' to read it from standard input.")],
    config: ConfigOpt = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    seed: SeedOpt = None,
    system: SystemOpt = None,
    protocol: ProtocolOpt = None,
    policy: PolicyOpt = None,
    gateway: GatewayOpt = None,
    hybrid: HybridOpt = False,
) -> None:
    """Ask one confidential question: sealed here, answered inside the attested enclave, opened here."""
    text = sys.stdin.read() if question == "-" else question
    if not text.strip():
        raise typer.BadParameter("the question is empty")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    try:
        conv = _conversation(config, protocol, policy, gateway, hybrid)
        for chunk in conv.stream(messages, max_tokens=max_tokens, temperature=temperature, seed=seed):
            sys.stdout.write(chunk.text)
            sys.stdout.flush()
        sys.stdout.write("\n")
    except NitroLLMError as exc:
        raise _fail(exc) from None


def chat(
    config: ConfigOpt = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    seed: SeedOpt = None,
    system: SystemOpt = None,
    protocol: ProtocolOpt = None,
    policy: PolicyOpt = None,
    gateway: GatewayOpt = None,
    hybrid: HybridOpt = False,
) -> None:
    """Multi-turn confidential chat with streamed answers: one attestation (attested protocol) or one
    KMS data key (kms protocol) for the whole conversation. Type /exit (or Ctrl-D) to leave, /new to
    start a fresh conversation."""
    try:
        conv = _conversation(config, protocol, policy, gateway, hybrid)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    history: list[Mapping[str, str]] = [{"role": "system", "content": system}] if system else []
    err.print("[dim]confidential chat — /new for a fresh conversation, /exit to leave[/]")
    while True:
        try:
            line = input("you> ")
        except (EOFError, KeyboardInterrupt):
            err.print()
            return
        if line.strip() in ("/exit", "/quit"):
            return
        if line.strip() == "/new":
            conv = _conversation(config, protocol, policy, gateway, hybrid)
            history = history[:1] if system else []
            err.print("[dim]new conversation[/]")
            continue
        if not line.strip():
            continue
        history.append({"role": "user", "content": line})
        sys.stdout.write("llm> ")
        parts: list[str] = []
        try:
            for chunk in conv.stream(history, max_tokens=max_tokens, temperature=temperature, seed=seed):
                parts.append(chunk.text)
                sys.stdout.write(chunk.text)
                sys.stdout.flush()
        except NitroLLMError as exc:
            history.pop()  # the turn failed: do not send a question without its answer next time
            err.print("\n" + _error_line(exc))
            continue
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(parts)})


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("chat")(chat)
