"""Start and stop the local stack's processes, each in its own session with its own log file.

Processes are started as ``python -m nitro_llm.cli.main ...`` with this interpreter, so the stack runs
the same code as the caller and needs nothing on PATH.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from nitro_llm.errors import NitroLLMError


class StackError(NitroLLMError, code="local_stack_error"):
    pass


def cli_argv(*args: str, python_flags: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, *python_flags, "-m", "nitro_llm.cli.main", *args]


def network_isolation_available() -> bool:
    """True when we may put the enclave in a network namespace with only loopback (root + unshare)."""
    if shutil.which("unshare") is None or shutil.which("ip") is None:
        return False
    probe = subprocess.run(
        ["unshare", "--net", "--", "ip", "link", "set", "lo", "up"], capture_output=True, timeout=10
    )
    return probe.returncode == 0


def isolated_argv(argv: list[str]) -> list[str]:
    """Wrap a command so it runs in a fresh network namespace whose only interface is loopback, as
    an enclave has no network; it reaches the gateway through a Unix socket (the vsock stand-in)."""
    return [
        "unshare",
        "--net",
        "--",
        "sh",
        "-c",
        'ip link set lo up && exec "$@"',
        "nitro-llm-enclave",
        *argv,
    ]


@dataclass
class ManagedProcess:
    name: str
    argv: list[str]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "ab") as log:
            self.proc = subprocess.Popen(
                self.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env={**os.environ, **self.env},
                cwd=self.cwd,
                start_new_session=True,  # its own process group: stop() reaches its children too
            )

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise StackError(f"{self.name} is not started")
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def log_tail(self, lines: int = 15) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)


def wait_until(
    check: Callable[[], bool], *, what: str, timeout: float, process: ManagedProcess | None = None
) -> None:
    """Poll ``check`` until it holds; fail early, with the process's log tail, if the process died."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if process is not None and not process.alive():
            raise StackError(
                f"{process.name} exited before {what}; its log ({process.log_path}) ends with:\n"
                f"{process.log_tail()}",
                hint="fix the cause above and start the stack again",
            )
        time.sleep(0.1)
    raise StackError(
        f"timed out after {timeout:.0f} s waiting for {what}",
        hint=f"see {process.log_path}" if process else "",
    )
