"""`nitro-llm enclave serve|pcrs`: run the enclave server, or print the PCRs it will attest to.

Both commands take the same measured options, so the PCRs printed by ``pcrs`` (used to write the
KMS key policy) are exactly those ``serve`` reports for the same arguments.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Annotated

import typer

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.data_keys import DEFAULT_TTL_SECONDS
from nitro_llm.enclave.freshness import DEFAULT_WINDOW_SECONDS
from nitro_llm.errors import NitroLLMError
from nitro_llm.inference.llama_engine import DEFAULT_CTX

enclave_app = typer.Typer(help="The enclave: decrypts, answers, encrypts.", no_args_is_help=True)

ModelOpt = Annotated[Path | None, typer.Option("--model", help="GGUF model (default: the packaged SmolLM2).")]
EngineOpt = Annotated[
    str, typer.Option("--engine", help="llama (the model), or echo if the development package is installed.")
]
ThreadsOpt = Annotated[
    int,
    typer.Option(
        "--threads",
        min=0,
        help="Inference threads; 0 (default): every CPU the enclave has but one, at least one "
        "(measured: llama.cpp's spinning threads lose badly on a CPU anything else needs).",
    ),
]
CtxOpt = Annotated[int, typer.Option("--ctx", min=64, help="Context window in tokens.")]
DebugOpt = Annotated[bool, typer.Option("--debug-mode", help="Attest as a debug enclave: all-zero PCR0-2.")]
WindowOpt = Annotated[
    float, typer.Option("--freshness-window", min=1.0, help="Accepted request clock skew, seconds.")
]
TtlOpt = Annotated[
    float, typer.Option("--data-key-ttl", min=0.0, help="Seconds a released data key is cached (0: never).")
]
BatchOpt = Annotated[
    int, typer.Option("--batch-size", min=1, help="Sequences decoded together (continuous batching).")
]
WaitingOpt = Annotated[
    int, typer.Option("--max-waiting", min=0, help="Requests that may wait for a slot (more: enclave_busy).")
]
FleetKmsKeyOpt = Annotated[
    str | None,
    typer.Option(
        "--fleet-kms-key",
        help="Fleet replica: ARN of the KMS key wrapping the fleet key (changes the PCRs); the gateway"
        " hands the enclave the fleet key file (--fleet-key-file). Default: own session keys.",
    ),
]
SeedOpt = Annotated[
    bool,
    typer.Option("--seed-compat", help="Also accept the AWS sample's weaker wire format (changes the PCRs)."),
]


def enclave_config(
    model: Path | None,
    engine: str,
    threads: int,
    ctx: int,
    debug_mode: bool,
    window: float,
    ttl: float,
    seed_compat: bool = False,
    batch_size: int = 8,
    max_waiting: int = 8,
    fleet_kms_key: str | None = None,
) -> EnclaveConfig:
    from nitro_llm.enclave.engines import installed_engines

    if engine not in installed_engines():
        raise typer.BadParameter(f"--engine must be one of: {', '.join(installed_engines())}")
    try:
        return EnclaveConfig(
            engine=engine,
            model_path=model,
            threads=threads,
            ctx=ctx,
            debug_mode=debug_mode,
            freshness_window_seconds=window,
            data_key_ttl_seconds=ttl,
            seed_compat=seed_compat,
            batch_size=batch_size,
            max_waiting=max_waiting,
            fleet_kms_key=fleet_kms_key,
        )
    except ValueError as exc:  # e.g. a --fleet-kms-key that is not a key ARN
        raise typer.BadParameter(str(exc)) from None


def fail(exc: NitroLLMError) -> typer.Exit:
    typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
    if exc.hint:
        typer.echo(f"hint: {exc.hint}", err=True)
    return typer.Exit(1)


@enclave_app.command("serve")
def serve(
    listen: Annotated[
        str, typer.Option("--listen", help="unix:PATH (local mode) or vsock:any:PORT (Nitro).")
    ],
    region: Annotated[str, typer.Option("--region", help="AWS region of the KMS key.")],
    kms_endpoint: Annotated[
        str | None, typer.Option("--kms-endpoint", help="KMS URL as seen from inside the enclave.")
    ] = None,
    kms_forward_to: Annotated[
        str | None,
        typer.Option(
            "--kms-forward-to", help="Forward --kms-endpoint's loopback port here (the gateway's relay)."
        ),
    ] = None,
    nsm: Annotated[
        str,
        typer.Option(
            "--nsm",
            help="device (/dev/nsm, on Nitro) or unix:PATH (local mode's NSM emulator, outside it).",
        ),
    ] = "device",
    model: ModelOpt = None,
    engine: EngineOpt = "llama",
    threads: ThreadsOpt = 0,
    ctx: CtxOpt = DEFAULT_CTX,
    debug_mode: DebugOpt = False,
    freshness_window: WindowOpt = DEFAULT_WINDOW_SECONDS,
    data_key_ttl: TtlOpt = DEFAULT_TTL_SECONDS,
    seed_compat: SeedOpt = False,
    batch_size: BatchOpt = 8,
    max_waiting: WaitingOpt = 8,
    fleet_kms_key: FleetKmsKeyOpt = None,
) -> None:
    """Serve requests until SIGTERM. The socket appears once the model is loaded."""
    from nitro_llm.attestation.nsm import open_nsm
    from nitro_llm.enclave.runtime import KmsSettings
    from nitro_llm.enclave.runtime import serve as run

    if nsm != "device" and not nsm.startswith("unix:"):
        raise typer.BadParameter("--nsm must be device or unix:PATH")
    if kms_forward_to and not kms_endpoint:
        raise typer.BadParameter("--kms-forward-to needs --kms-endpoint (the loopback URL to forward)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s enclave %(levelname)s %(message)s")
    config = enclave_config(
        model, engine, threads, ctx, debug_mode, freshness_window, data_key_ttl, seed_compat,
        batch_size=batch_size, max_waiting=max_waiting, fleet_kms_key=fleet_kms_key,
    )  # fmt: skip
    try:
        run(
            config,
            listen_address=listen,
            kms=KmsSettings(endpoint=kms_endpoint, region=region, forward_to=kms_forward_to),
            nsm=open_nsm("device") if nsm == "device" else open_nsm("socket", socket_path=nsm),
        )
    except NitroLLMError as exc:
        raise fail(exc) from None


def register(app: typer.Typer) -> None:
    app.add_typer(enclave_app, name="enclave")
