"""Local mode's load balancer: HAProxy from Debian's packages, in front of the fleet's gateways.

A real balancer rather than one of our own, so that the fleet is tested against what operators run:
round robin over the gateways, each health-checked on ``GET /healthz`` (503 while its enclave is down
or holds no fleet key), a server taken out after two failed checks, or at once when it answers a
request with a 5xx (passive checking: a 503 ``enclave_unavailable`` means its enclave is gone), and
put back after two good checks.
A connection a gateway refuses is redispatched to another one by HAProxy itself (nothing reached a
gateway, so nothing can run twice); everything else (a gateway or an enclave dying mid-answer) is the
client's to retry (nitro_llm/client/failover.py). Answers stream through unbuffered.
"""

from __future__ import annotations

import contextlib
import csv
import io
import shutil
import socket
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nitro_llm_dev.local.processes import ManagedProcess, StackError, wait_until

HAPROXY = "haproxy"
CHECK_INTERVAL_MS = 500
MAX_SOCKET_PATH = 100
ANSWER_TIMEOUT_S = 330  # above the gateway's first-frame timeout (300 s): the gateway times out first


@dataclass(frozen=True)
class Backend:
    name: str
    port: int


def render_config(port: int, backends: list[Backend], stats_socket: Path) -> str:
    """The whole configuration: loopback only, one frontend, one backend per gateway."""
    if not backends:
        raise StackError("a balancer needs at least one gateway")
    servers = "\n".join(f"    server {b.name} 127.0.0.1:{b.port} check" for b in backends)
    return f"""\
global
    maxconn 4096
    stats socket {stats_socket} mode 600 level admin

defaults
    mode http
    timeout connect 2s
    timeout client {ANSWER_TIMEOUT_S}s
    timeout server {ANSWER_TIMEOUT_S}s
    timeout http-request 15s
    timeout queue 10s
    retries 2
    option redispatch 1

frontend fleet
    bind 127.0.0.1:{port}
    default_backend gateways

backend gateways
    balance roundrobin
    option httpchk
    http-check send meth GET uri /healthz
    http-check expect status 200
    default-server inter {CHECK_INTERVAL_MS}ms fastinter {CHECK_INTERVAL_MS // 2}ms rise 2 fall 2 \
observe layer7 error-limit 1 on-error mark-down
{servers}
"""


def server_states(stats_socket: Path, timeout: float = 2.0) -> dict[str, str]:
    """Each gateway's state as HAProxy sees it ("UP", "DOWN", "UP 1/2", ...), from its stats socket."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(stats_socket))
        sock.sendall(b"show stat\n")
        data = bytearray()
        while chunk := sock.recv(65536):
            data += chunk
    text = data.decode("utf-8", "replace").lstrip("# ")
    rows = csv.DictReader(io.StringIO(text))
    return {
        row["svname"]: row["status"]
        for row in rows
        if row.get("pxname") == "gateways" and row.get("svname") not in ("BACKEND", "FRONTEND")
    }


class Balancer:
    """HAProxy as a managed process (its own session, its log beside the others)."""

    def __init__(self, directory: Path, port: int, backends: list[Backend], log_path: Path) -> None:
        if shutil.which(HAPROXY) is None:
            raise StackError(
                "HAProxy is not installed",
                hint="apt-get install haproxy (it is in scripts/apt-packages.txt)",
            )
        self.port = port
        self.backends = backends
        self.config_path = directory / "haproxy.cfg"
        self.stats_socket = directory / "haproxy.sock"
        self._short_dir: Path | None = None
        if len(str(self.stats_socket)) > MAX_SOCKET_PATH:  # a Unix socket path has at most 107 bytes
            self._short_dir = Path(tempfile.mkdtemp(prefix="nitro-llm-haproxy-"))
            self.stats_socket = self._short_dir / "stats.sock"
        self.config_path.write_text(render_config(port, backends, self.stats_socket))
        self.process = ManagedProcess(HAPROXY, [HAPROXY, "-db", "-f", str(self.config_path)], log_path)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout: float = 30.0) -> None:
        check = ManagedProcess(HAPROXY, [HAPROXY, "-c", "-f", str(self.config_path)], self.process.log_path)
        check.start()
        assert check.proc is not None
        if check.proc.wait(timeout=timeout) != 0:
            raise StackError(f"HAProxy refused its configuration:\n{check.log_tail()}")
        self.stats_socket.unlink(missing_ok=True)
        self.process.start()
        wait_until(self.stats_socket.exists, what="HAProxy to start", timeout=timeout, process=self.process)

    def states(self) -> dict[str, str]:
        with contextlib.suppress(OSError):
            return server_states(self.stats_socket)
        return {}

    def wait_all_up(self, timeout: float = 60.0) -> None:
        names = {b.name for b in self.backends}
        wait_until(
            lambda: {n for n, s in self.states().items() if s == "UP"} == names,
            what="HAProxy to see every gateway healthy",
            timeout=timeout,
            process=self.process,
        )

    def stop(self) -> None:
        self.process.stop()
        if self._short_dir is not None:
            shutil.rmtree(self._short_dir, ignore_errors=True)
