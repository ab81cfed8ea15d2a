"""One local stack per state directory, and the address it keeps across restarts.

Why a claim: two stacks in one ``$NITRO_LLM_HOME`` share the enclave's socket directory, the KMS
emulator's state and the client files. A second ``nitro-llm up`` (or ``demo``) used to get as far as
starting its own KMS emulator, which refused the shared state late with the real cause at the end of
a log, and on its way had deleted the running stack's enclave socket: the first stack never
recovered. Now a stack takes an exclusive ``flock`` on ``stack.lock`` before it touches anything and
holds it for its whole life; a second start fails at once, naming the running stack (pid, gateway
URL) from ``running.json``. The kernel drops the lock when its holder dies, so a stack that crashed
or was killed never blocks the next one (its ``running.json`` is then stale, and is read only while
someone holds the lock, then checked against the pid).

Why a remembered port: the gateway's URL is what a ``nitro-llm proxy`` (or a script) holds on to, and
``up`` used to pick a new random port on every start. The port a stack's gateway served on is kept
in ``gateway.port`` and taken again next time, unless something else listens there.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import socket
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitro_llm_dev.local.processes import StackError

LOCK_NAME = "stack.lock"
OWNER_NAME = "running.json"
PORT_NAME = "gateway.port"


class StackAlreadyRunning(StackError, code="local_stack_running"):
    """stop it with Ctrl-C in its terminal, or set NITRO_LLM_HOME to another folder to run a second stack"""


class GatewayPortTaken(StackError, code="local_gateway_port_taken"):
    """pass another --gateway-port, or leave it out to reuse the last one (or any free port)"""


@dataclass
class StackClaim:
    """The exclusive right to run the local stack whose state is in ``root``.

    Held from :meth:`acquire` until :meth:`release` or the holder's death; never inherited by the
    stack's children (the descriptor is close-on-exec), so it lives exactly as long as the process
    that owns the stack.
    """

    root: Path
    _fd: int | None = field(default=None, repr=False)

    @property
    def lock_path(self) -> Path:
        return self.root / LOCK_NAME

    @property
    def owner_path(self) -> Path:
        return self.root / OWNER_NAME

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        """Take the claim, or raise :class:`StackAlreadyRunning` having changed nothing."""
        if self._fd is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
        # The lock file is never deleted: unlinking a lock file others may have open splits the lock.
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise
            raise StackAlreadyRunning(
                f"a local stack is already running in {self.root} ({describe_owner(self.owner_path)})"
            ) from None
        self._fd = fd
        try:
            self.record(gateway_url=None)
        except BaseException:
            self.release()
            raise

    def record(self, *, gateway_url: str | None) -> None:
        """Say who holds the claim (this process) and where its gateway is, for a refused second start."""
        if self._fd is None:
            raise StackError("the local stack's claim is not held")
        owner = {
            "pid": os.getpid(),
            "gateway_url": gateway_url,
            "since": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        }
        tmp = self.owner_path.with_name(f".{OWNER_NAME}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(owner) + "\n")
        tmp.replace(self.owner_path)  # a reader sees the old record or the new one, never half

    def release(self) -> None:
        if self._fd is None:
            return
        with contextlib.suppress(FileNotFoundError):
            self.owner_path.unlink()  # ours: only the holder writes it
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        os.close(self._fd)
        self._fd = None


def describe_owner(path: Path) -> str:
    """The running stack as a person can find it: "pid 1234, gateway http://127.0.0.1:40123"."""
    try:
        owner: Any = json.loads(path.read_text())
    except (OSError, ValueError):
        owner = None
    pid = owner.get("pid") if isinstance(owner, dict) else None
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0 or not _alive(pid):
        return f"its process holds {path.with_name(LOCK_NAME)}; pid unknown"
    url = owner.get("gateway_url")
    where = f"gateway {url}" if isinstance(url, str) and url else "still starting, gateway not up yet"
    return f"pid {pid}, {where}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # someone else's process: it exists
    return True


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    """Whether a server could listen on ``host:port`` now. Bound with SO_REUSEADDR as uvicorn binds,
    so a port the last stack left in TIME_WAIT counts as free, as it is to the gateway."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def remembered_port(root: Path) -> int | None:
    """The port this state directory's last gateway served on, if one was recorded."""
    try:
        text = (root / PORT_NAME).read_text().strip()
    except OSError:
        return None
    if not (text.isascii() and text.isdigit()) or not 0 < int(text) < 65536:
        return None
    return int(text)


def remember_port(root: Path, port: int) -> None:
    tmp = root / f".{PORT_NAME}.{os.getpid()}.tmp"
    tmp.write_text(f"{port}\n")
    tmp.replace(root / PORT_NAME)
