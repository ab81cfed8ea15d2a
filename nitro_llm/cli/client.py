"""`nitro-llm ask` and `nitro-llm chat`: the data owner's commands. All decryption happens here.

Answers are printed as they arrive, so an answer that stops early is marked where it is printed: a
last line ``[answer cut off: REASON]`` on standard output, whether the stream failed (the error
itself goes to standard error), the user pressed Ctrl-C, or the answer reached ``--max-tokens``.
Behind a load balancer, an answer cut by a lost replica is marked ``[answer discarded: CODE; asking
again]`` and followed by the whole answer from another replica (client/failover.py).
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TextIO

import typer
from rich.markup import escape

from nitro_llm.cli.console import make_console
from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:
    from nitro_llm.client.protocol_choice import Conversation
    from nitro_llm.client.wire import AnswerChunk

err = make_console(stderr=True)

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
    typer.Option(
        help="Client policy (JSON) for the attested protocol; it must exist. Default: the local stack's."
    ),
]
GatewayOpt = Annotated[
    str | None, typer.Option(help="Gateway URL for the attested protocol. Default: from --config.")
]
HybridOpt = Annotated[
    bool, typer.Option(help="Attested: seal with ML-KEM-768+X25519 (post-quantum hybrid) HPKE.")
]

CHAT_HELP = """\
/help   this list
/new    start a fresh conversation (a new attestation, or a new KMS data key)
/exit   leave (also /quit, or Ctrl-D)
//text  send a line that starts with '/'
Ctrl-C  while an answer streams: stop that answer; the conversation goes on
Up/Down earlier questions of this session (kept in memory only, never written to disk)"""


def _fail(exc: NitroLLMError) -> typer.Exit:
    err.print(_error_line(exc))
    return typer.Exit(code=2)


def _error_line(exc: NitroLLMError) -> str:
    """Escaped: the code in brackets would otherwise be eaten as a rich style tag, and a message may
    carry text from a remote peer."""
    return f"[bold red]error[/] {escape(f'[{exc.code}] {exc}')}"


def _choose_protocol(protocol: str | None, policy: Path | None, hybrid: bool) -> str:
    """The protocol to speak. Options the chosen protocol would ignore are usage errors, not silently
    dropped; a ``--policy`` naming no file raises (a typo must not turn off this machine's check)."""
    from nitro_llm.client.protocol_choice import KMS, choose_protocol, kms_fallback_note

    if protocol == KMS and policy is not None:
        raise typer.BadParameter(
            "a client policy is checked only in the attested protocol; in the kms protocol the KMS key"
            " policy checks the enclave (leave out --policy, or use --protocol attested)",
            param_hint="'--policy'",
        )
    chosen = choose_protocol(protocol, policy)
    if hybrid and chosen == KMS:
        why = "" if protocol == KMS else " (no client policy was found, so the kms protocol was chosen)"
        raise typer.BadParameter(
            f"the ML-KEM hybrid seals to the enclave's attested key, so it exists only in the attested"
            f" protocol{why}",
            param_hint="'--hybrid'",
        )
    if protocol is None and policy is None and chosen == KMS:
        err.print(f"[yellow]note[/] {escape(kms_fallback_note())}")
    return chosen


def _conversation(
    config_path: Path | None, protocol: str, policy: Path | None, gateway: str | None, hybrid: bool
) -> Conversation:
    from nitro_llm.client.protocol_choice import open_conversation

    return open_conversation(
        protocol,
        config_path=config_path,
        policy_path=policy,
        gateway=gateway,
        suite="mlkem768-x25519" if hybrid else None,
    )


def show_answer(chunks: Iterator[AnswerChunk], out: TextIO, *, max_tokens: int, started: bool = False) -> str:
    """Write the answer to ``out`` as it arrives and return it.

    An answer cut by a lost replica and sent again (client/failover.py) is followed by a line
    ``[answer discarded: CODE; asking again]`` and then the whole new answer, which alone is returned.
    An answer that does not end normally is marked on ``out`` with a last line ``[answer cut off:
    REASON]``: the error's code (the error is then re-raised for the caller to report), "stopped
    (Ctrl-C)" (KeyboardInterrupt re-raised), or the max_tokens limit (returned normally: it is a whole
    answer, only shorter than the model wanted). ``started``: something (a prompt) is already on the
    line, so even an answer cut before its first piece ends it.
    """
    parts: list[str] = []
    reason: str | None = None
    try:
        for chunk in chunks:
            if chunk.restarted:  # the replica was lost mid-answer: what was shown is void, never spliced
                out.write(f"\n[answer discarded: {chunk.restarted}; asking again]\n")
                out.flush()
                parts.clear()
                continue
            out.write(chunk.text)
            out.flush()
            parts.append(chunk.text)
            if chunk.final:
                reason = chunk.finish_reason
    except NitroLLMError as exc:
        _mark_cut(out, exc.code, bool(parts) or started)
        raise
    except KeyboardInterrupt:
        _mark_cut(out, "stopped (Ctrl-C)", bool(parts) or started)
        raise
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            close()  # leaves the HTTP stream: the gateway and the enclave stop this answer too
    out.write("\n")
    if reason == "length":
        out.write(f"[answer cut off: it reached max_tokens ({max_tokens})]\n")
        err.print("[dim]raise --max-tokens for longer answers[/]")
    elif reason not in (None, "stop"):
        out.write(f"[answer cut off: {reason}]\n")
    out.flush()
    return "".join(parts)


def _mark_cut(out: TextIO, reason: str, shown: bool) -> None:
    if shown:  # nothing printed yet: standard output holds no partial answer to mark
        out.write(f"\n[answer cut off: {reason}]\n")
        out.flush()


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
        conv = _conversation(config, _choose_protocol(protocol, policy, hybrid), policy, gateway, hybrid)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    try:
        # One question, no follow-up: the enclave need keep nothing of this conversation.
        chunks = conv.stream(
            messages, max_tokens=max_tokens, temperature=temperature, seed=seed, one_shot=True
        )
        show_answer(chunks, sys.stdout, max_tokens=max_tokens)
    except NitroLLMError as exc:
        raise _fail(exc) from None
    finally:
        conv.close()


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
    KMS data key (kms protocol) for the whole conversation. Ctrl-C stops an answer, /help lists the
    commands, /new starts a fresh conversation, /exit (or Ctrl-D) leaves."""
    try:
        chosen = _choose_protocol(protocol, policy, hybrid)
        conv = _conversation(config, chosen, policy, gateway, hybrid)
        verify = getattr(conv, "verify", None)  # attested: check the enclave now, before any question
        if verify is not None:
            verify()
    except NitroLLMError as exc:
        raise _fail(exc) from None
    _enable_line_editing()
    err.print("[dim]confidential chat — /help for the commands, /exit to leave[/]")
    run_chat(
        conv,
        lambda: _conversation(config, chosen, policy, gateway, hybrid),
        read_line=input,
        out=sys.stdout,
        system=system,
        sampling={"max_tokens": max_tokens, "temperature": temperature, "seed": seed},
    )


def run_chat(
    conv: Conversation,
    reopen: Callable[[], Conversation],
    *,
    read_line: Callable[[str], str],
    out: TextIO,
    system: str | None,
    sampling: Mapping[str, Any],
) -> None:
    """The chat loop: questions from ``read_line``, answers to ``out``, until /exit or end of input.

    Lines starting with '/' are commands handled here and never sent to the model. Ctrl-C while an
    answer streams stops that answer (the turn is left out of the conversation, which goes on);
    Ctrl-C at the prompt clears the line, twice in a row leaves.
    """
    base: list[Mapping[str, str]] = [{"role": "system", "content": system}] if system else []
    history = list(base)
    interrupted = False
    try:
        while True:
            try:
                line = read_line("you> ")
            except EOFError:
                err.print()
                return
            except KeyboardInterrupt:
                err.print()
                if interrupted:
                    return
                interrupted = True
                err.print("[dim](Ctrl-C again, Ctrl-D or /exit to leave)[/]")
                continue
            interrupted = False
            text = line.strip()
            if not text:
                continue
            if text.startswith("/") and not text.startswith("//"):
                command = text.split()[0].lower()
                if command in ("/exit", "/quit"):
                    return
                if command == "/help":
                    err.print(CHAT_HELP, markup=False, highlight=False)
                elif command == "/new":
                    try:
                        fresh = reopen()
                    except NitroLLMError as exc:
                        err.print(_error_line(exc) + " [dim](the current conversation goes on)[/]")
                        continue
                    conv.close()
                    conv, history = fresh, list(base)
                    err.print("[dim]new conversation[/]")
                else:
                    err.print(
                        f"unknown command {command[:40]}, /help lists them", markup=False, highlight=False
                    )
                continue
            if text.startswith("//"):
                line = line.lstrip()[1:]
            history.append({"role": "user", "content": line})
            out.write("llm> ")
            out.flush()
            try:
                chunks = conv.stream(history, **sampling)
                answer = show_answer(chunks, out, max_tokens=int(sampling["max_tokens"]), started=True)
            except NitroLLMError as exc:
                history.pop()  # the turn failed: do not send a question without its answer next time
                err.print(_error_line(exc))
                continue
            except KeyboardInterrupt:
                history.pop()
                err.print("[dim]answer stopped; that question is left out of the conversation[/]")
                continue
            history.append({"role": "assistant", "content": answer})
    finally:
        conv.close()


def _enable_line_editing() -> None:
    """Arrow keys, Ctrl-A/Ctrl-E and Up/Down history for ``input()`` on a terminal (the ``readline``
    module does it once imported). The history stays in this process: questions may hold PHI, so it
    is never written to a file."""
    if not sys.stdin.isatty():
        return
    try:
        import readline
    except ImportError:  # not built on every platform; chat works without it
        return
    readline.set_history_length(1000)


def register(app: typer.Typer) -> None:
    app.command("ask")(ask)
    app.command("chat")(chat)
