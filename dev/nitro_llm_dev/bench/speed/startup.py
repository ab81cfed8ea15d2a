"""(j) Start-up: from ``nitro-llm up`` to the first answer, and where the time goes.

What a user does, as processes: ``nitro-llm up --timings`` is started (the image already built and
cached, as after any first start), and the moment it prints that it is ready, ``nitro-llm ask``
asks one short question (the attested protocol, the default: its own process, its imports, the
attestation fetched and verified, the question sealed, the first answer opened). Timed from this
side: launch to ready, then the ``ask`` process from launch to exit. ``up``'s own record of its
phases (``run/startup.json``, local/startup.py), which overlap because it starts its processes in
parallel, says where the time went, the enclave's phases included.

The first start in a new state directory also creates the development CA and the KMS key; later
starts reuse both, as restarts of ``nitro-llm up`` do. Each round restarts in the same state
directory; the first start is reported on its own.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from nitro_llm_dev.bench.speed.stacks import BenchStackError, bench_dir
from nitro_llm_dev.bench.speed.stats import median
from nitro_llm_dev.local.processes import cli_argv
from nitro_llm_dev.local.startup import STARTUP_FILE, load_timings

QUESTION = "What colour is the sky on a clear day?"
ANSWER_TOKENS = 8
_READY_TIMEOUT = 300.0


@contextlib.contextmanager
def _up(state: Path, log: Path) -> Iterator[tuple[subprocess.Popen[str], float]]:
    """``nitro-llm up --timings --state STATE`` running until the block ends; (process, seconds from
    its launch to its "ready" line)."""
    started = time.perf_counter()
    with log.open("a") as sink:
        proc = subprocess.Popen(
            cli_argv("up", "--state", str(state), "--timings"),
            stdout=subprocess.PIPE,
            stderr=sink,
            stdin=subprocess.DEVNULL,
            text=True,
            env={**os.environ, "COLUMNS": "200"},
            start_new_session=True,
        )
    try:
        ready = _wait_ready_line(proc, started, log)
        yield proc, ready
    finally:
        proc.terminate()  # 'up' stops its stack on SIGTERM
        try:
            proc.wait(60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _wait_ready_line(proc: subprocess.Popen[str], started: float, log: Path) -> float:
    assert proc.stdout is not None
    found = threading.Event()
    ready_at: list[float] = []
    lines: list[str] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line)
            if not found.is_set() and line.startswith("ready:"):
                ready_at.append(time.perf_counter() - started)
                found.set()

    threading.Thread(target=read, name="up-stdout", daemon=True).start()
    if not found.wait(_READY_TIMEOUT) or not ready_at:
        raise BenchStackError(f"'nitro-llm up' did not get ready: {''.join(lines)[-400:]} (see {log})")
    return ready_at[0]


def _ask(state: Path) -> tuple[float, str]:
    """``nitro-llm ask`` against the stack in ``state``: (seconds from launch to exit, answer)."""
    argv = cli_argv("ask", "--config", str(state / "client.json"), "--policy", str(state / "policy.json"))
    start = time.perf_counter()
    done = subprocess.run(
        [*argv, "--max-tokens", str(ANSWER_TOKENS), QUESTION], capture_output=True, text=True, timeout=300
    )
    seconds = time.perf_counter() - start
    if done.returncode != 0:
        raise BenchStackError(f"'nitro-llm ask' failed: {done.stderr[-400:]}")
    return seconds, done.stdout.strip()


def _one_start(state: Path, log: Path) -> dict[str, Any]:
    with _up(state, log) as (_proc, ready):
        ask, answer = _ask(state)
        record = load_timings(state / "run" / STARTUP_FILE) or {}
    return {
        "ready_s": round(ready, 3),
        "ask_s": round(ask, 3),
        "first_answer_s": round(ready + ask, 3),
        "answered": bool(answer),
        "stack_start_s": record.get("total_s"),
        "phases": record.get("phases", []),
    }


def bench_startup(rounds: int = 3, progress: Callable[[str], None] = lambda _m: None) -> dict[str, Any]:
    """``{"first_start": one, "restarts": [one per round], "median": {...}}``, each ``one`` a dict of
    seconds (``ready_s``, ``ask_s``, ``first_answer_s``, ``stack_start_s``) and ``up``'s phases."""
    state = Path(tempfile.mkdtemp(prefix="startup-", dir=bench_dir()))
    log = state.parent / f"{state.name}.log"
    try:
        progress("(j) start-up: first start in a new state directory")
        first = _one_start(state, log)
        restarts = []
        for r in range(rounds):
            progress(f"(j) start-up: restart {r + 1} of {rounds}")
            restarts.append(_one_start(state, log))
    finally:
        shutil.rmtree(state, ignore_errors=True)
        log.unlink(missing_ok=True)
    keys = ("ready_s", "ask_s", "first_answer_s", "stack_start_s")
    summary = {k: round(median([float(r[k] or 0) for r in restarts]), 3) for k in keys}
    typical = min(restarts, key=lambda r: abs(r["first_answer_s"] - summary["first_answer_s"]))
    return {
        "rounds": rounds,
        "question_tokens": ANSWER_TOKENS,
        "first_start": first,
        "restarts": restarts,
        "median": summary,
        "typical_phases": typical["phases"],
        "load_average_1m": round(os.getloadavg()[0], 2),
    }
