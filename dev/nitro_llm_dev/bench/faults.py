"""A byte relay that can misbehave on command: the link between gateway and enclave, broken on purpose.

Standing between a gateway and the enclave's socket, it forwards bytes both ways until told to
``stall`` (stop reading from the enclave, so the enclave blocks mid-answer as behind a congested
vsock) or to ``cut`` (reset every open connection, as when the link drops). A stalled relay keeps
what it already read and delivers it on ``resume``, then the enclave's end-of-stream: exactly what a
gateway sees when an enclave dies halfway through an answer.
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading

from nitro_llm.transport import close_listener, connect, listen
from nitro_llm.transport.acceptor import ThreadedAcceptor

_BUFFER = 64 * 1024


class FaultProxy:
    def __init__(self, listen_address: str, upstream_address: str, *, max_connections: int = 128) -> None:
        self.listen_address = listen_address
        self.upstream_address = upstream_address
        self._max_connections = max_connections
        self._lock = threading.Lock()
        self._pairs: set[tuple[socket.socket, socket.socket]] = set()
        self._flowing = threading.Event()
        self._flowing.set()
        self._budget: int | None = None
        self._listener: socket.socket | None = None
        self._acceptor: ThreadedAcceptor | None = None
        self.connections = 0
        self.cuts = 0

    def start(self) -> FaultProxy:
        self._listener = listen(self.listen_address)
        self._acceptor = ThreadedAcceptor(
            self._listener, self._serve, max_connections=self._max_connections, name="fault-proxy"
        )
        self._acceptor.start()
        return self

    def stop(self) -> None:
        self._flowing.set()
        if self._acceptor is not None:
            self._acceptor.stop_accepting()
        self.cut()
        if self._acceptor is not None:
            self._acceptor.join()
        if self._listener is not None:
            close_listener(self._listener, self.listen_address)

    def stall(self, after_bytes: int = 0) -> None:
        """Stop passing the enclave's bytes to the gateway once ``after_bytes`` more have passed
        (the gateway -> enclave direction keeps flowing). Bytes held are delivered on resume."""
        with self._lock:
            self._budget = after_bytes
            if after_bytes == 0:
                self._flowing.clear()

    def resume(self) -> None:
        with self._lock:
            self._budget = None
        self._flowing.set()

    def cut(self) -> int:
        """Reset every open connection (RST, not a clean close); returns how many were cut."""
        with self._lock:
            pairs = list(self._pairs)
        for pair in pairs:
            for sock in pair:
                with contextlib.suppress(OSError):
                    # SO_LINGER 0: the peer sees a reset, as when a link really drops.
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
        self.cuts += len(pairs)
        return len(pairs)

    @property
    def open_connections(self) -> int:
        with self._lock:
            return len(self._pairs)

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = connect(self.upstream_address, 5.0)
        except Exception:
            return  # the enclave is down: the gateway sees its connection close, as with no proxy
        upstream.settimeout(None)
        pair = (client, upstream)
        with self._lock:
            self._pairs.add(pair)
            self.connections += 1
        try:
            back = threading.Thread(target=self._pump, args=(upstream, client, True), daemon=True)
            back.start()
            self._pump(client, upstream, False)
            back.join()
        finally:
            with self._lock:
                self._pairs.discard(pair)
            upstream.close()

    def _within_budget(self, data: bytes, sink: socket.socket) -> bytes:
        """Send what the stall budget still allows; return the rest (held until resume)."""
        with self._lock:
            budget = self._budget
            if budget is None:
                return data
            allowed = min(budget, len(data))
            self._budget = budget - allowed
            if self._budget == 0:
                self._budget = None
                self._flowing.clear()
        sink.sendall(data[:allowed])
        return data[allowed:]

    def _pump(self, source: socket.socket, sink: socket.socket, from_enclave: bool) -> None:
        try:
            while True:
                if from_enclave:
                    self._flowing.wait()
                data = source.recv(_BUFFER)
                if not data:
                    break
                if from_enclave:
                    data = self._within_budget(data, sink)
                    self._flowing.wait()  # a stall that began during recv holds these bytes too
                sink.sendall(data)
        except OSError:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            return
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)
