"""Where a local stack's start-up time goes: its phases, timed, for ``nitro-llm up --timings`` and
``nitro-llm bench`` scenario (j).

The stack starts its processes in parallel where nothing orders them (stack.py), so phases overlap:
each is kept as an interval from the start of ``LocalStack.start()``, not as a share of a sum. The
enclave's own phases (its Python started, the model checked and loaded, listening, credentials
taken) happen in another process, in another PID and mount namespace; they are read from the
timestamps of its log lines, which the enclave writes for operators anyway, matched by the
beginning of their text (``ENCLAVE_MARKS``). The record is saved next to the stack's sockets
(``run/startup.json``) so whoever started ``nitro-llm up`` can read it.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import time
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

STARTUP_FILE = "startup.json"
ENCLAVE_MARKS = (
    ("enclave: Python and its imports", "enclave INFO platform "),
    ("enclave: model checked (SHA-256)", "enclave INFO inference threads="),
    ("enclave: model loaded, KV cache allocated", "enclave WARNING NSM over a socket"),
    ("enclave: listening (NSM read, session keys made)", "enclave INFO enclave listening"),
    ("enclave: credentials taken from the gateway", "enclave INFO credentials received"),
)
"""(phase, the beginning of the enclave log line that ends it), in the order the enclave logs them."""
_LOG_TIME = "%Y-%m-%d %H:%M:%S,%f"


@dataclass(frozen=True)
class Phase:
    name: str
    start: float  # seconds from the start of LocalStack.start()
    end: float

    @property
    def seconds(self) -> float:
        return self.end - self.start


@dataclass
class StartupTimings:
    """Phases of one start, as intervals on the stack's own clock (monotonic)."""

    origin: float = field(default_factory=time.monotonic)
    wall_origin: float = field(default_factory=time.time)
    phases: list[Phase] = field(default_factory=list)

    def now(self) -> float:
        return time.monotonic() - self.origin

    @contextlib.contextmanager
    def phase(self, name: str) -> Iterator[None]:
        start = self.now()
        try:
            yield
        finally:
            self.add(name, start, self.now())

    def add(self, name: str, start: float, end: float) -> None:
        self.phases.append(Phase(name, round(start, 4), round(end, 4)))

    def add_enclave_log(self, log: Path, launched: float) -> None:
        """The enclave's phases from its log (``launched``: when the stack started the process, on
        this clock). Only this start's lines count: the log is appended to across restarts."""
        try:
            lines = log.read_text(errors="replace").splitlines()
        except OSError:
            return
        since = self.wall_origin + launched - 1.0  # the log's clock is the wall clock, to the ms
        marks = list(ENCLAVE_MARKS)
        start = launched
        for line in lines:
            if not marks:
                break
            name, prefix = marks[0]
            if prefix not in line:
                continue
            stamp = _log_time(line, since)
            if stamp is None:
                continue
            end = max(start, stamp - self.wall_origin)
            self.add(name, start, end)
            start = end
            marks.pop(0)

    @property
    def total(self) -> float:
        return max((p.end for p in self.phases), default=0.0)

    def to_dict(self) -> dict[str, object]:
        return {"total_s": round(self.total, 3), "phases": [asdict(p) for p in self.phases]}

    def save(self, path: Path) -> None:
        path.write_text(json.dumps(self.to_dict(), indent=1) + "\n")


def _log_time(line: str, since: float) -> float | None:
    """The wall time a log line was written, if at or after ``since`` (within 10 minutes). The
    enclave writes its local time: the host's for a source-tree enclave, UTC inside the image (it
    holds no time zone data), so both readings are tried."""
    try:
        naive = dt.datetime.strptime(line[:23], _LOG_TIME)
    except ValueError:
        return None
    for stamp in (naive.timestamp(), naive.replace(tzinfo=dt.UTC).timestamp()):
        if since <= stamp <= since + 600:
            return stamp
    return None


def process_age(pid: int | None = None) -> float | None:
    """Seconds since a process (default: this one) started, from /proc (Linux; else None): what a
    command's own imports cost comes before any clock it could start itself."""
    import os

    try:
        with open(f"/proc/{pid or os.getpid()}/stat") as f:
            started = int(f.read().rsplit(")", 1)[1].split()[19])  # field 22: starttime, clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
    except (OSError, ValueError, IndexError):
        return None
    return uptime - started / os.sysconf("SC_CLK_TCK")


def load_timings(path: Path) -> dict[str, object] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def render_timings(record: dict[str, object], width: int = 40) -> str:
    """Phases as text lines, each with its interval and a bar on a shared time axis."""
    phases = record.get("phases")
    if not isinstance(phases, list) or not phases:
        return "no start-up timings recorded"
    total = max(float(p["end"]) for p in phases) or 1.0
    lines = []
    for p in phases:
        start, end = float(p["start"]), float(p["end"])
        left = round(start / total * width)
        bar = " " * left + "#" * max(1, round(end / total * width) - left)
        lines.append(f"{p['name']:<48} {start:6.2f} -> {end:6.2f} s  ({end - start:5.2f}) |{bar:<{width}}|")
    lines.append(f"{'ready (from the start of LocalStack.start)':<48} {total:6.2f} s")
    return "\n".join(lines)
