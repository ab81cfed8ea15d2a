"""Fixtures for the hostile suite: a real uvicorn gateway on loopback in front of a scripted enclave
peer, and one hostile local stack (real processes, echo engine) shared by the slow tests.

The gateway tests run the real server, not an ASGI test client, because what is under test lives in
the HTTP layer: header deadlines, connection closing, bodies that never finish. Time on the request
path is a fake clock each test moves by hand; nothing here sleeps to order threads.
"""

from __future__ import annotations

import socket
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from nitro_llm.gateway.admission import AccessSettings
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.auth import ClientLimits, add_client
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.gateway.slow_clients import uvicorn_options
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm_dev.bench.hostile_stack import HostileStack

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "gateway"))
from gateway_fakes import FakeClock


class ScriptedEnclave:
    """Answers ping with a pong (uptime and has_credentials settable), credentials with ok (and sets
    ``credentials_received``), and infer with ``chunks`` chunk frames. Counts every connection."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.connections = 0
        self.received: list[dict[str, Any]] = []
        self.chunks = 3
        self.uptime = 100
        self.has_credentials = True
        self.credentials_received = threading.Event()
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(64)
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(conn,), daemon=True).start()

    def _handle(self, conn: socket.socket) -> None:
        with conn:
            try:
                frame = read_frame(conn)
            except Exception:
                return
            if frame is None:
                return
            self.received.append(frame)
            try:
                if frame["t"] == "ping":
                    conn.sendall(
                        encode_frame(
                            {
                                "t": "pong",
                                "uptime_seconds": self.uptime,
                                "has_credentials": self.has_credentials,
                            }
                        )
                    )
                elif frame["t"] == "credentials":
                    self.has_credentials = True
                    self.credentials_received.set()
                    conn.sendall(encode_frame({"t": "ok"}))
                else:
                    for seq in range(self.chunks):
                        final = seq == self.chunks - 1
                        conn.sendall(
                            encode_frame({"t": "chunk", "seq": seq, "final": final, "ct": b"\x01" * 32})
                        )
            except OSError:
                return

    def infer_count(self) -> int:
        return sum(1 for f in self.received if f.get("t") == "infer")

    def close(self) -> None:
        self.sock.close()


class Gateway:
    """The real gateway app under uvicorn with the slow-client protocol, on 127.0.0.1. ``clock`` is
    the fake clock the app was built with, if any."""

    def __init__(self, app: Any, *, clock: FakeClock | None = None, **options: Any) -> None:
        self.clock = clock
        # Listening before uvicorn starts: a connection made early waits in the backlog instead of
        # being refused, so nobody has to poll for the server to be up.
        self._sock = socket.create_server(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._ready = threading.Event()
        config = uvicorn.Config(
            _signal_startup(app, self._ready),
            log_level="warning",
            access_log=False,
            **uvicorn_options(**options),
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> Gateway:
        self._thread.start()
        if not self._ready.wait(10):
            raise RuntimeError("the gateway did not start")
        return self

    def __exit__(self, *_exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


def _signal_startup(app: Any, ready: threading.Event) -> Any:
    """``app``, setting ``ready`` once its lifespan startup is complete (the enclave monitor runs)."""

    async def wrapped(scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "lifespan":
            await app(scope, receive, send)
            return

        async def send_and_signal(message: dict[str, Any]) -> None:
            await send(message)
            if message["type"] == "lifespan.startup.complete":
                ready.set()

        await app(scope, receive, send_and_signal)

    return wrapped


@pytest.fixture
def enclave_peer(tmp_path: Path) -> Iterator[ScriptedEnclave]:
    peer = ScriptedEnclave(tmp_path / "enclave.sock")
    yield peer
    peer.close()


@pytest.fixture
def make_peer() -> Iterator[Callable[[Path], ScriptedEnclave]]:
    peers: list[ScriptedEnclave] = []

    def make(path: Path) -> ScriptedEnclave:
        peers.append(ScriptedEnclave(path))
        return peers[-1]

    yield make
    for peer in peers:
        peer.close()


@pytest.fixture
def tokens_file(tmp_path: Path) -> Path:
    return tmp_path / "api-tokens.json"


@pytest.fixture
def issue(tokens_file: Path) -> Callable[..., str]:
    def make(name: str, **limits: Any) -> str:
        return add_client(tokens_file, name, ClientLimits(**limits))

    return make


@pytest.fixture
def gateway(enclave_peer: ScriptedEnclave, tokens_file: Path) -> Iterator[Callable[..., Gateway]]:
    """Factory: a running gateway with the given access settings and server options, on a fake clock
    (``gw.clock``), in front of ``enclave_peer`` or the ``link`` given."""
    running: list[Gateway] = []

    def make(
        *,
        tokens: bool = True,
        body_timeout: float = 5.0,
        max_body: int = 1 << 20,
        link: Any = None,
        **options: Any,
    ) -> Gateway:
        settings = GatewaySettings(
            enclave=f"unix:{enclave_peer.path}", max_body_bytes=max_body, connect_timeout=1
        )
        access = AccessSettings(tokens_file=tokens_file if tokens else None, body_timeout=body_timeout)
        clock = FakeClock()
        app = create_app(settings, access=access, link=link, clock=clock)
        gw = Gateway(app, clock=clock, **options).__enter__()
        running.append(gw)
        return gw

    yield make
    for gw in running:
        gw.__exit__()


@pytest.fixture(scope="session")
def hostile_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HostileStack]:
    with HostileStack(tmp_path_factory.mktemp("hostile")) as hs:
        yield hs
