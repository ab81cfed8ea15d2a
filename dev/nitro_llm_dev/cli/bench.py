"""`nitro-llm bench`: speed, measured — each scenario against a baseline from the same run."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from nitro_llm.errors import NitroLLMError
from nitro_llm_dev.bench.speed import SCENARIOS

SCENARIO_HELP = (
    "Letters of the scenarios to run: a overhead, b protocol path, c seed stack (needs the bench extra), "
    "d many users, e KMS calls, f a chat's turns with and without the enclave's KV cache, "
    "g 1 vs 2 inference threads, h the load balancer's hop (fleets of 1-3 replicas behind HAProxy), "
    "i the peer (llama-cpp-python's OpenAI server, needs the bench extra) against our proxy and clients, "
    "j start-up from 'nitro-llm up' to the first answer."
)


def _repo_root() -> Path:
    here = Path(__file__).resolve().parents[3]  # dev/nitro_llm_dev/cli/ -> the repository
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def bench(
    ctx: typer.Context,
    scenario: Annotated[str, typer.Option("--scenario", "-s", help=SCENARIO_HELP)] = "abde",
    threads: Annotated[
        int, typer.Option("--threads", min=1, help="Inference threads (enclave and baselines).")
    ] = 1,
    max_tokens: Annotated[
        int, typer.Option("--max-tokens", min=2, help="Tokens per answer in (a), (d) and (i).")
    ] = 64,
    repeats: Annotated[
        int, typer.Option("--repeats", min=1, help="Runs per path in (a), single answers per route in (i).")
    ] = 7,
    sessions: Annotated[
        int, typer.Option("--sessions", min=1, help="Concurrent sessions in (d), clients at once in (i).")
    ] = 8,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="The enclave's batch size.")] = 8,
    seconds: Annotated[
        float,
        typer.Option("--seconds", min=0.5, help="Timed seconds per level in (b) and per fleet size in (h)."),
    ] = 3.0,
    report: Annotated[
        bool, typer.Option("--report", help="Rewrite BENCHMARKS.md and docs/bench/*.png from this run.")
    ] = False,
    output: Annotated[Path | None, typer.Option("--json", help="Also write the results here.")] = None,
) -> None:
    """Measure the confidential path against plain baselines; print ratios (and write the report).
    'nitro-llm bench hostile' runs the hostile soak instead (see its --help)."""
    if ctx.invoked_subcommand is not None:
        return
    import importlib.util

    from nitro_llm_dev.bench.speed.runner import BenchOptions, run_bench
    from nitro_llm_dev.bench.speed.targets import check_targets

    wanted = "".join(sorted(set(scenario.lower())))
    if not wanted or set(wanted) - set(SCENARIOS):
        raise typer.BadParameter(f"--scenario takes letters among {', '.join(SCENARIOS)}")
    if "c" in wanted:
        missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
        if missing:
            typer.echo(
                f"scenario (c) needs {', '.join(missing)}: install the bench extra with\n"
                "  .venv/bin/pip install -e '.[bench]'\n"
                "(or run scripts/setup.sh with NITRO_LLM_BENCH=1), then run again.",
                err=True,
            )
            raise typer.Exit(2)
    if "i" in wanted:
        from nitro_llm_dev.bench.speed.peer import missing_packages

        if missing := missing_packages():
            typer.echo(
                f"scenario (i) needs {', '.join(missing)} (the openai SDK and llama-cpp-python's server "
                "extra, without reinstalling llama-cpp-python): install the bench extra with\n"
                "  .venv/bin/pip install -e '.[bench]'\nthen run again.",
                err=True,
            )
            raise typer.Exit(2)
    options = BenchOptions(
        scenarios=wanted,
        threads=threads,
        max_tokens=max_tokens,
        repeats=repeats,
        sessions=sessions,
        batch_size=batch_size,
        max_waiting=max(8, sessions),
        seconds=seconds,
    )
    try:
        results = run_bench(options, progress=lambda m: typer.echo(f"[bench] {m}", err=True))
    except NitroLLMError as exc:
        typer.echo(f"error [{exc.code}]: {exc.message}", err=True)
        if exc.hint:
            typer.echo(f"hint: {exc.hint}", err=True)
        raise typer.Exit(1) from None
    typer.echo(json.dumps({k: v for k, v in results.items() if k != "machine"}, indent=1))
    for target in check_targets(results):
        mark = {True: "MET   ", False: "MISSED", None: "-     "}[target["met"]]
        typer.echo(f"{mark} {target['target']}: {target['measured']}")
    if output:
        output.write_text(json.dumps(results, indent=1) + "\n")
    if report:
        from nitro_llm_dev.bench.speed.report import write_report

        path = write_report(results, _repo_root())
        typer.echo(f"wrote {path}")


def register(app: typer.Typer) -> None:
    from nitro_llm_dev.cli.hostile import hostile_command

    bench_app = typer.Typer(invoke_without_command=True)
    bench_app.callback()(bench)
    bench_app.command("hostile")(hostile_command)
    app.add_typer(bench_app, name="bench")
