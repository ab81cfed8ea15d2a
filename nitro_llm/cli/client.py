"""`nitro-llm ask` and `nitro-llm chat`: the data owner's commands. All decryption happens here."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.console import Console

from nitro_llm.client.config import ClientConfig, default_config_path
from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:
    from nitro_llm.client.kms_conversation import KmsConversation

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


def _fail(exc: NitroLLMError) -> typer.Exit:
    err.print(f"[bold red]error[/] [{exc.code}] {exc}")
    return typer.Exit(code=2)


def _conversation(config_path: Path | None) -> KmsConversation:
    from nitro_llm.client.kms_conversation import KmsConversation

    return KmsConversation(ClientConfig.load(config_path or default_config_path()))


def ask(
    question: Annotated[str, typer.Argument(help="The question; use '-' to read it from standard input.")],
    config: ConfigOpt = None,
    max_tokens: MaxTokensOpt = 256,
    temperature: TemperatureOpt = 0.0,
    seed: SeedOpt = None,
    system: SystemOpt = None,
) -> None:
    """Ask one confidential question: sealed here, answered inside the attested enclave, opened here."""
    text = sys.stdin.read() if question == "-" else question
    if not text.strip():
        raise typer.BadParameter("the question is empty")
    messages = ([{"role": "system", "content": system}] if system else []) + [
        {"role": "user", "content": text}
    ]
    try:
        conv = _conversation(config)
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
) -> None:
    """Multi-turn confidential chat with streamed answers. One KMS data key for the whole
    conversation. Type /exit (or Ctrl-D) to leave, /new to start a fresh conversation."""
    try:
        conv = _conversation(config)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    history: list[dict[str, str]] = [{"role": "system", "content": system}] if system else []
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
            conv = _conversation(config)
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
            err.print(f"\n[bold red]error[/] [{exc.code}] {exc}")
            continue
        sys.stdout.write("\n")
        history.append({"role": "assistant", "content": "".join(parts)})


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("chat")(chat)
