"""Seams for gateway tests: a scripted enclave link that never opens a socket, and a clock that
moves only when the test says so. Passed to ``create_app(link=..., clock=...)``."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncGenerator
from typing import Any

from nitro_llm.gateway.errors import EnclaveUnavailable
from nitro_llm.protocol.frame_codec import encode_frame


class FakeClock:
    """Monotonic seconds that stand still until :meth:`advance`."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class ScriptedLink:
    """An in-memory enclave: ping -> pong, credentials -> ok, infer -> ``chunks`` chunk frames (or
    ``first_frame`` instead of the first). ``down`` makes every call fail as a dead link would.

    ``release`` holds answers: while it is clear, an infer waits before its first frame (and so keeps
    its admission slot), after setting ``infer_started``.
    """

    def __init__(self, chunks: int = 3) -> None:
        self.chunks = chunks
        self.first_frame: dict[str, Any] | None = None
        self.uptime = 100
        self.has_credentials = True
        self.down = False
        self.received: list[dict[str, Any]] = []
        self.infer_started = threading.Event()
        self.release = threading.Event()
        self.release.set()

    def infer_count(self) -> int:
        return sum(1 for f in self.received if f.get("t") == "infer")

    async def call(self, frame: dict[str, object], timeout: float = 10.0) -> dict[str, object]:
        self.received.append(dict(frame))
        if self.down:
            raise EnclaveUnavailable("cannot reach the enclave (scripted)")
        if frame["t"] == "ping":
            return {"t": "pong", "uptime_seconds": self.uptime, "has_credentials": self.has_credentials}
        if frame["t"] == "credentials":
            self.has_credentials = True
            return {"t": "ok"}
        return {"t": "error", "code": "unexpected_frame", "message": "not scripted", "retryable": False}

    async def infer(self, envelope: bytes) -> AsyncGenerator[bytes, None]:
        self.received.append({"t": "infer", "envelope": envelope})
        if self.down:
            raise EnclaveUnavailable("cannot reach the enclave (scripted)")
        self.infer_started.set()
        if not self.release.is_set():
            await asyncio.to_thread(self.release.wait, 30)
        if self.first_frame is not None:
            yield encode_frame(self.first_frame)
            return
        for seq in range(self.chunks):
            yield encode_frame(
                {"t": "chunk", "seq": seq, "final": seq == self.chunks - 1, "ct": b"\x01" * 32}
            )
