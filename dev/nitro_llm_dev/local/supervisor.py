"""Keep the local stack's enclave and KMS emulator running: restart whichever dies.

On Nitro, restarting a dead enclave is the host's job (``nitro-cli run-enclave`` under systemd); the
gateway only reports it. Locally the stack owns the processes, so it plays that part: a dead process
is restarted with the same arguments — the enclave with the same measured code, model and config,
so it attests to the same PCRs and KMS keeps releasing keys to it; the emulator on the same port and
state directory, so clients and the gateway's relay find it where they left it.

Restarts are spaced (a process that dies at once is not restarted in a tight loop) and bounded: after
``max_restarts`` within ``window`` seconds the supervisor gives up on that process and says so.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from nitro_llm_dev.local.processes import ManagedProcess

if TYPE_CHECKING:
    from nitro_llm_dev.local.stack import LocalStack

log = logging.getLogger("nitro_llm_dev.local.supervisor")

POLL_SECONDS = 0.2
MIN_SPACING_SECONDS = 1.0
MAX_RESTARTS = 10
WINDOW_SECONDS = 300.0


@dataclass
class _Watched:
    get: Callable[[], ManagedProcess | None]
    prepare: Callable[[ManagedProcess], None] = lambda _proc: None
    restarts: list[float] = field(default_factory=list)
    gave_up: bool = False


class StackSupervisor:
    def __init__(
        self,
        *,
        poll: float = POLL_SECONDS,
        spacing: float = MIN_SPACING_SECONDS,
        max_restarts: int = MAX_RESTARTS,
        window: float = WINDOW_SECONDS,
    ) -> None:
        self._poll = poll
        self._spacing = spacing
        self._max = max_restarts
        self._window = window
        self._watched: dict[str, _Watched] = {}
        self._lock = threading.Lock()
        self._paused = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.events: list[tuple[float, str, str]] = []  # (time, process, what happened)

    def watch(
        self,
        name: str,
        get: Callable[[], ManagedProcess | None],
        prepare: Callable[[ManagedProcess], None] = lambda _proc: None,
    ) -> None:
        """``get`` returns the current process; ``prepare`` adjusts it before a restart."""
        with self._lock:
            self._watched[name] = _Watched(get, prepare)

    def start(self) -> StackSupervisor:
        self._thread = threading.Thread(target=self._loop, name="stack-supervisor", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)

    @contextlib.contextmanager
    def paused(self) -> Iterator[None]:
        """Hold restarts (a test or an operator wants a process down for a while)."""
        with self._lock:
            self._paused += 1
        try:
            yield
        finally:
            with self._lock:
                self._paused -= 1

    def restarts(self, name: str) -> int:
        with self._lock:
            watched = self._watched.get(name)
            return len(watched.restarts) if watched else 0

    def gave_up(self) -> list[str]:
        with self._lock:
            return [name for name, w in self._watched.items() if w.gave_up]

    def _loop(self) -> None:
        while not self._stop.wait(self._poll):
            with self._lock:
                if self._paused:
                    continue
                items = list(self._watched.items())
            for name, watched in items:
                proc = watched.get()
                if proc is None or proc.alive() or watched.gave_up or self._stop.is_set():
                    continue
                self._restart(name, watched, proc)

    def _restart(self, name: str, watched: _Watched, proc: ManagedProcess) -> None:
        now = time.monotonic()
        recent = [t for t in watched.restarts if now - t < self._window]
        if len(recent) >= self._max:
            watched.gave_up = True
            self._event(name, f"gave up after {len(recent)} restarts in {self._window:.0f} s")
            log.error("%s keeps dying; not restarting it again (see %s)", name, proc.log_path)
            return
        if recent and now - recent[-1] < self._spacing:
            return  # too soon after the last restart: try again on a later poll
        code = proc.proc.returncode if proc.proc is not None else None
        self._event(name, f"exited (code {code}); restarting")
        log.warning("%s exited (code %s); restarting it", name, code)
        watched.prepare(proc)
        proc.start()
        with self._lock:
            watched.restarts.append(now)

    def _event(self, name: str, what: str) -> None:
        with self._lock:
            self.events.append((time.time(), name, what))


def supervise_stack(stack: LocalStack) -> StackSupervisor:
    """Watch a started local stack's enclave and KMS emulator (the gateway is the stack's face: if
    it dies, ``nitro-llm up`` stops and says so)."""
    port = stack.kms_url.rsplit(":", 1)[1]

    def same_kms_port(proc: ManagedProcess) -> None:
        # The first start asked for port 0; a restart must come back where clients and the relay look.
        argv = list(proc.argv)
        if "--port" in argv:
            argv[argv.index("--port") + 1] = port
        proc.argv = argv

    supervisor = StackSupervisor()
    supervisor.watch("enclave", lambda: stack.enclave_proc)
    supervisor.watch("kms-emulator", lambda: stack.kms, same_kms_port)
    return supervisor.start()


def lost_processes(stack: LocalStack, supervisor: StackSupervisor | None) -> list[ManagedProcess]:
    """Stack processes that are dead and will not come back on their own."""
    supervised = {"enclave": stack.enclave_proc, "kms-emulator": stack.kms} if supervisor else {}
    given_up = set(supervisor.gave_up()) if supervisor else set()
    lost = []
    for proc in (stack.kms, stack.enclave_proc, stack.gateway):
        if proc is None or proc.alive():
            continue
        name = next((n for n, p in supervised.items() if p is proc), None)
        if name is None or name in given_up:
            lost.append(proc)
    return lost
