"""Test helpers for the protocol wire: an ASGI app on a real port, and a recording httpx transport.

Shared by tests/attested_wiring and tests/e2e/test_attested.py. The transport sits where the
network sits, so a test can assert on exactly what the client sent to the gateway, and can rewrite
the gateway's relayed answer as a hostile host would (replay, swap, cut chunks).
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable

import httpx
import uvicorn

from nitro_llm.protocol.frame_codec import FrameDecoder, encode_frame

Tamper = Callable[[list[dict]], list[dict]]


def decode_frames(body: bytes) -> list[dict]:
    decoder = FrameDecoder()
    out = decoder.feed(body)
    decoder.close()
    return out


class RecordingTransport(httpx.BaseTransport):
    """Records every request the client sends; with ``tamper``, rewrites the frames of /v1/infer."""

    def __init__(self, inner: httpx.BaseTransport | None = None, tamper: Tamper | None = None):
        self.inner = inner or httpx.HTTPTransport()
        self.tamper = tamper
        self.sent: list[tuple[str, str, bytes]] = []
        self.infer_bodies: list[bytes] = []

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        self.sent.append((request.method, request.url.path, request.read()))
        response = self.inner.handle_request(request)
        content = response.read()
        if request.url.path == "/v1/infer":
            self.infer_bodies.append(content)
            if self.tamper is not None:
                content = b"".join(encode_frame(f) for f in self.tamper(decode_frames(content)))
        return httpx.Response(
            response.status_code, headers={"content-type": response.headers["content-type"]}, content=content
        )

    def paths(self) -> list[tuple[str, str]]:
        return [(method, path) for method, path, _ in self.sent]

    def close(self) -> None:
        self.inner.close()


class RunningServer:
    """An ASGI app served by uvicorn on a free loopback port, in a thread."""

    def __init__(self, app):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self) -> RunningServer:
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()
