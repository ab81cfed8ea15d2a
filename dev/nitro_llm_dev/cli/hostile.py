"""`nitro-llm bench hostile`: hostile inputs and faults against a real local stack, with figures.

``--report`` writes the figures table into SECURITY.md (between its markers), so the published
numbers always come from a run, never from a keyboard. The exit code is 1 if any property failed.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console

from nitro_llm.errors import NitroLLMError

err = Console(stderr=True)
DEFAULT_REPORT = (
    Path(__file__).resolve().parents[3] / "SECURITY.md"
)  # dev/nitro_llm_dev/cli/ -> the repository


def hostile_command(
    seconds: Annotated[float, typer.Option(min=0, help="Length of the loopback load (0: skip it).")] = 60.0,
    frames: Annotated[int, typer.Option(min=0, help="Random frames sent to the enclave's socket.")] = 10_000,
    clients: Annotated[int, typer.Option(min=1, max=8, help="Well-formed clients during the load.")] = 6,
    drills: Annotated[
        bool, typer.Option(help="Run the fault drills (kill enclave, drop link, kill KMS).")
    ] = True,
    seed: Annotated[int, typer.Option(help="Seed of the random inputs (a failure can be replayed).")] = 0,
    report: Annotated[
        bool, typer.Option("--report", help="Write the figures table into SECURITY.md (see --report-file).")
    ] = False,
    report_file: Annotated[Path, typer.Option(help="The file whose figures section --report rewrites.")] = (
        DEFAULT_REPORT
    ),
    state: Annotated[
        Path | None, typer.Option(help="Directory for the stack's state and logs (default: a temporary one).")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the failures and figures as JSON.")] = False,
) -> None:
    """Attack a fresh local stack (echo engine) for a while and print what held and what did not."""
    from nitro_llm_dev.bench.hostile import run_hostile, write_report

    root = state or Path(tempfile.mkdtemp(prefix="nitro-llm-hostile-"))
    try:
        with err.status("hostile run…") as status:
            run = run_hostile(
                root,
                seconds=seconds,
                frames=frames,
                well_formed=clients,
                drills=drills,
                seed=seed,
                progress=lambda msg: status.update(msg),
            )
    except NitroLLMError as exc:
        err.print(f"[bold red]error[/] [{exc.code}] {exc}")
        raise typer.Exit(2) from None
    failures = run.failures()
    if as_json:
        typer.echo(json.dumps({"failures": failures, "figures": dict(run.rows())}, indent=2))
    else:
        typer.echo(run.to_markdown())
    if report:
        try:
            write_report(report_file, run.to_markdown())
        except NitroLLMError as exc:
            err.print(f"[bold red]error[/] [{exc.code}] {exc}")
            raise typer.Exit(2) from None
        err.print(f"figures written to {report_file}")
    err.print(f"logs in {root / 'logs'}")
    if failures:
        raise typer.Exit(1)
