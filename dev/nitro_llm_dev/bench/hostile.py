"""`nitro-llm bench hostile`: attack a real local stack, then publish what happened.

One run: random frames at the enclave's socket; the fault drills (enclave killed mid-stream, the
gateway-enclave link dropped mid-stream, KMS killed), each with its recovery and a replay of the
request caught in it; a bounded loopback load of well-formed and hostile clients; a leak scan of
the gateways' memory, logs and every file written meanwhile; process memory sampled throughout.
``failures()`` lists every property that did not hold, so the same run is a test (tests/hostile
runs it shorter) and a soak (60 s and more here); ``to_markdown()`` is the figures table that
``--report`` writes into SECURITY.md, so the published numbers are always ones a run produced.
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nitro_llm.errors import NitroLLMError
from nitro_llm_dev.bench import fault_drills
from nitro_llm_dev.bench.fault_drills import DrillResult
from nitro_llm_dev.bench.frame_fuzz import FuzzResult, fuzz_enclave
from nitro_llm_dev.bench.hostile_stack import HostileStack
from nitro_llm_dev.bench.leaks import LeakReport, files_written_since, open_files, scan
from nitro_llm_dev.bench.load import LoadResult, run_load
from nitro_llm_dev.bench.procstat import RssSampler, Series

MB = 1 << 20
RSS_CEILING = {
    "gateway": 512 * MB,
    "gateway (faulty link)": 512 * MB,
    "enclave": 1024 * MB,
    "kms-emulator": 512 * MB,
}
RSS_GROWTH_LIMIT = 64 * MB
"""Steady load must not grow any process by more than this between the run's halves."""
MAX_SCANNED_FILE = 16 * MB
EXPECTED_DRILL_ERRORS = {
    "kill the enclave mid-stream": "enclave_unavailable",
    "drop the gateway-enclave link mid-stream": "enclave_unavailable",
    "kill the KMS emulator": "kms_unavailable",
}
REPLAY_REFUSALS = frozenset({"replayed_request", "stale_request"})
COMMAND = "nitro-llm bench hostile"
BEGIN = f"<!-- hostile-figures:begin (written by '{COMMAND} --report'; do not edit) -->"
END = "<!-- hostile-figures:end -->"


class ReportError(NitroLLMError):
    code = "report_error"
    default_hint = f"the file needs the two marker lines:\n{BEGIN}\n{END}"


@dataclass
class HostileRun:
    seconds: float
    frames: int
    well_formed: int
    started: str = ""
    commit: str = ""
    duration: float = 0.0
    fuzz: FuzzResult | None = None
    serving_after_fuzz: bool = False
    drills: list[DrillResult] = field(default_factory=list)
    load: LoadResult | None = None
    leaks: dict[str, LeakReport] = field(default_factory=dict)
    rss_all: dict[str, Series] = field(default_factory=dict)
    rss_load: dict[str, Series] = field(default_factory=dict)

    # -- verdict ---------------------------------------------------------------------------------
    def failures(self) -> list[str]:
        out: list[str] = []
        if self.fuzz is not None:
            if self.fuzz.answered_forgeries:
                out.append(f"the enclave answered {self.fuzz.answered_forgeries} damaged frames")
            if self.fuzz.sent != self.frames:
                out.append(f"only {self.fuzz.sent} of {self.frames} frames were sent")
            if not self.serving_after_fuzz:
                out.append("the enclave did not answer a valid request after the random frames")
        for drill in self.drills:
            out += _drill_failures(drill)
        if self.load is not None:
            load = self.load
            if load.well_formed_errors:
                out.append(f"well-formed requests failed: {Counter(load.well_formed_errors).most_common(5)}")
            if load.well_formed_ok == 0:
                out.append("no well-formed request was answered during the load")
            out += [f"hostile request not refused with a typed answer: {u}" for u in load.untyped[:20]]
            if load.answered_hostile:
                out.append(f"{load.answered_hostile} replayed, tampered or garbage requests were answered")
        for where, report in self.leaks.items():
            if report.hits:
                out.append(f"canary found in {where}: {', '.join(report.hits[:5])}")
            if where.endswith("memory") and not report.witness_found:
                out.append(f"the {where} scan could not see the process (proves nothing)")
        for name, series in self.rss_all.items():
            if series.peak > RSS_CEILING.get(name, 1024 * MB):
                out.append(f"{name} peaked at {series.peak // MB} MB")
        for name, series in self.rss_load.items():
            if series.growth() > RSS_GROWTH_LIMIT:
                out.append(f"{name} grew {series.growth() // MB} MB under steady load")
        return out

    # -- figures ---------------------------------------------------------------------------------
    def rows(self) -> list[tuple[str, str]]:
        rows: list[tuple[str, str]] = []
        if self.fuzz is not None:
            f = self.fuzz
            codes = ", ".join(f"{c} {n}" for c, n in f.codes.most_common(6))
            rows.append(
                (
                    "Random frames sent to the enclave's socket",
                    f"{f.sent:,}: typed error {f.typed_errors:,}, hung up {f.hangups:,}, "
                    f"valid ping/credentials {f.other_replies}, **answered {f.answered_forgeries}**; "
                    f"still serving: {'yes' if self.serving_after_fuzz else 'NO'} ({codes})",
                )
            )
        if self.load is not None:
            load = self.load
            by_kind: Counter[str] = Counter()
            for key, n in load.hostile.items():
                by_kind[key.split(":", 1)[0]] += n
            kinds = ", ".join(f"{k} {n:,}" for k, n in by_kind.most_common())
            refusals: Counter[str] = Counter()
            for key, n in load.hostile.items():
                refusals[key.split(":", 1)[1]] += n
            rows.append(
                (
                    f"Hostile requests during the {load.seconds:.0f} s load",
                    f"{load.hostile_total:,} ({kinds}); not refused with a typed answer: "
                    f"**{len(load.untyped)}**; answered: **{load.answered_hostile}**",
                )
            )
            rows.append(
                (
                    "Their outcomes (code or status)",
                    ", ".join(f"{c} {n:,}" for c, n in refusals.most_common(12)),
                )
            )
            rows.append(
                (
                    f"Well-formed requests ({self.well_formed} clients, own tokens, checked word for word)",
                    f"{load.well_formed_ok:,} answered, **{len(load.well_formed_errors)} errors**",
                )
            )
            rows.append(
                (
                    "Slowloris connections",
                    f"{load.slowloris_closed:,} closed by the header deadline, longest held "
                    f"{load.slowloris_max_seconds:.1f} s",
                )
            )
        if self.drills:
            rows.append(("Faults injected", "; ".join(d.name for d in self.drills)))
            for d in self.drills:
                midstream = (
                    f" after {d.chunks_before_error} of {d.chunks_expected} chunks"
                    if d.chunks_expected
                    else ""
                )
                down = ""
                if d.refused_while_down:
                    r = d.refused_while_down
                    down = f"; while down: HTTP {r['status']} {r['code']}, Retry-After {r['retry_after']}"
                rows.append(
                    (
                        f"— {d.name}",
                        f"client saw `{d.client_error}`{midstream}{down}; "
                        f"recovered: {'yes' if d.recovered else 'NO'} in {d.recovery_seconds:.1f} s; "
                        f"replay of the caught request: `{d.replay_code}`",
                    )
                )
            recovered = sum(d.recovered for d in self.drills)
            rows.append(("Recoveries", f"{recovered} of {len(self.drills)}, without intervention"))
        if self.leaks:
            canaries = max(r.canaries for r in self.leaks.values())
            scanned_mb = sum(r.memory_bytes_scanned for r in self.leaks.values()) / MB
            files = sum(r.files_scanned for r in self.leaks.values())
            found = sum(r.leaks for r in self.leaks.values())
            rows.append(
                (
                    "Leaks found",
                    f"**{found}** ({canaries:,} canaries sent in questions; searched {scanned_mb:,.0f} MB of "
                    f"gateway memory and {files:,} files written during the run: logs, the gateways' TMPDIR, "
                    "working directory and open files)",
                )
            )
        if self.rss_all:
            parts = []
            for name, series in self.rss_all.items():
                growth = self.rss_load.get(name)
                extra = f", {growth.growth() / MB:+.0f} MB under load" if growth else ""
                parts.append(f"{name} {series.peak / MB:.0f} MB{extra}")
            rows.append(("Peak resident memory", "; ".join(parts)))
        return rows

    def to_markdown(self) -> str:
        lines = [
            f"Produced by `{COMMAND} --report` on {self.started} "
            f"(commit {self.commit or 'unknown'}, {self.duration:.0f} s in all, loopback, echo engine).",
            "",
            "| | |",
            "|---|---|",
        ]
        lines += [f"| {k} | {v} |" for k, v in self.rows()]
        verdict = self.failures()
        lines += [
            "",
            "Verdict: "
            + ("**all properties held**." if not verdict else "**FAILED**: " + "; ".join(verdict)),
        ]
        return "\n".join(lines)


def _drill_failures(d: DrillResult) -> list[str]:
    out = []
    expected = EXPECTED_DRILL_ERRORS.get(d.name)
    if expected and d.client_error != expected:
        out.append(f"{d.name}: the client saw {d.client_error!r}, expected {expected!r}")
    if d.chunks_expected and not 0 < d.chunks_before_error < d.chunks_expected:
        out.append(f"{d.name}: the fault did not hit mid-stream ({d.chunks_before_error} chunks)")
    if d.notes.get("final_chunk_seen"):
        out.append(f"{d.name}: a cut answer was presented as complete")
    if not d.recovered:
        out.append(f"{d.name}: the system did not recover")
    if d.replay_code not in REPLAY_REFUSALS:
        out.append(f"{d.name}: the caught request replayed got {d.replay_code!r}")
    if d.refused_while_down and not (
        d.refused_while_down["status"] == 503 and d.refused_while_down["retry_after"]
    ):
        out.append(f"{d.name}: while down the gateway answered {d.refused_while_down}")
    if d.name == "kill the KMS emulator" and not d.notes.get("retryable"):
        out.append(f"{d.name}: kms_unavailable was not marked retryable")
    return out


def _git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=Path(__file__).resolve().parent,
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return out.stdout.strip() or "unknown"


def run_hostile(
    root: Path,
    *,
    seconds: float = 60.0,
    frames: int = 10_000,
    well_formed: int = 6,
    drills: bool = True,
    seed: int = 0,
    progress: Callable[[str], None] = lambda _msg: None,
) -> HostileRun:
    """Start a hostile stack under ``root``, run every phase, stop it; never raises on a finding
    (read ``failures()``), only when the stack cannot be started at all."""
    run = HostileRun(seconds=seconds, frames=frames, well_formed=well_formed)
    run.started = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    run.commit = _git_commit()  # the code the run starts with (the tree may move on meanwhile)
    began = time.monotonic()
    since = time.time()
    progress("starting the stack (KMS emulator, enclave, two gateways, fault proxy)")
    with HostileStack(root) as hs:
        pids = hs.pid_getters()
        with RssSampler(pids) as everything:
            if frames:
                progress(f"{frames:,} random frames to the enclave's socket")
                base = hs.conversation()

                def fresh() -> bytes:
                    return base.seal([{"role": "user", "content": "a request to damage"}])[1].to_cbor()

                run.fuzz = fuzz_enclave(f"unix:{hs.stack.enclave_socket}", fresh, count=frames, seed=seed)
                try:
                    run.serving_after_fuzz = (
                        base.ask([{"role": "user", "content": "still up?"}]) == "still up?"
                    )
                except NitroLLMError:
                    run.serving_after_fuzz = False
            if drills:
                for drill in (
                    fault_drills.kill_enclave_midstream,
                    fault_drills.drop_link_midstream,
                    fault_drills.kill_kms,
                ):
                    progress(f"fault drill: {drill.__name__.replace('_', ' ')}")
                    run.drills.append(drill(hs))
            if seconds:
                progress(f"{seconds:.0f} s of load: {well_formed} well-formed clients and hostile ones")
                with RssSampler(pids) as steady:
                    run.load = run_load(hs, seconds=seconds, well_formed=well_formed, seed=seed)
                run.rss_load = steady.series
                progress("leak scan: gateway memory, logs, files written during the run")
                run.leaks = leak_scan(hs, run.load.canaries, since)
        run.rss_all = everything.series
    run.duration = time.monotonic() - began
    return run


def leak_scan(hs: HostileStack, canaries: list[str], since: float) -> dict[str, LeakReport]:
    out: dict[str, LeakReport] = {}
    pids = hs.pids()
    for name in ("gateway", "gateway (faulty link)"):
        pid = pids.get(name)
        if pid is not None:
            out[f"{name} memory"] = scan(canaries, pid=pid, witness=b"/v1/infer")
    roots = [hs.root]  # the stack's state, logs and the gateways' private TMPDIR
    opened: list[Path] = []
    for name in ("gateway", "gateway (faulty link)"):
        pid = pids.get(name)
        if pid is not None:
            roots.append(Path(os.readlink(f"/proc/{pid}/cwd")))
            opened += open_files(pid)
    candidates = {*files_written_since(roots, since), *opened}
    files = sorted(p for p in candidates if p.is_file() and p.stat().st_size <= MAX_SCANNED_FILE)
    out["files written during the run"] = scan(canaries, files=files)
    return out


def write_report(path: Path, markdown: str) -> None:
    """Replace the figures between the markers in ``path`` (e.g. SECURITY.md), nothing else."""
    try:
        text = path.read_text()
    except OSError as exc:
        raise ReportError(f"cannot read {path} ({type(exc).__name__})") from None
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ReportError(f"{path} does not have exactly one pair of figure markers")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{BEGIN}\n{markdown}\n{END}{tail}")
