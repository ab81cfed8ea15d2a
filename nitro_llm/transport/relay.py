"""A bidirectional byte relay between two link addresses.

Two jobs, one mechanism: the gateway's vsock-proxy stand-in (enclave's Unix socket -> KMS over TCP)
and the in-enclave forwarder (boto3's TCP connection on loopback -> the gateway's relay). Bytes are
pumped unread: KMS traffic is TLS on AWS, and the relay has no reason to look at it.

Each accepted connection gets its own upstream connection and one thread per direction. When one
side finishes sending, the other side's write half is shut down (half-close), so request/response
protocols that signal "done" by closing their write side still work. Connections are bounded;
beyond the bound new ones wait in the listen backlog. ``stop()`` closes everything and joins.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading

from nitro_llm.transport.acceptor import ThreadedAcceptor
from nitro_llm.transport.address import Address, parse_address
from nitro_llm.transport.errors import TransportError
from nitro_llm.transport.link import close_listener, connect, listen

log = logging.getLogger(__name__)

DEFAULT_MAX_CONNECTIONS = 64
_BUFFER = 64 * 1024


class Relay:
    def __init__(
        self,
        listen_address: str | Address,
        upstream_address: str | Address,
        *,
        max_connections: int = DEFAULT_MAX_CONNECTIONS,
        connect_timeout: float = 10.0,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.listen_address = (
            listen_address if isinstance(listen_address, Address) else parse_address(listen_address)
        )
        self.upstream_address = (
            upstream_address if isinstance(upstream_address, Address) else parse_address(upstream_address)
        )
        self._max_connections = max_connections
        self._connect_timeout = connect_timeout
        self._lock = threading.Condition()  # notified whenever a connection opens or closes
        self._open: set[socket.socket] = set()
        self._listener: socket.socket | None = None
        self._acceptor: ThreadedAcceptor | None = None

    @property
    def bound_address(self) -> str:
        """The address actually listened on (tcp port 0 becomes the chosen port)."""
        if self._listener is None:
            raise RuntimeError("the relay is not started")
        if self.listen_address.kind == "tcp":
            host, port = self._listener.getsockname()[:2]
            return str(Address("tcp", host=host, port=port))
        return str(self.listen_address)

    @property
    def connections_total(self) -> int:
        return self._acceptor.accepted if self._acceptor else 0

    @property
    def active_connections(self) -> int:
        with self._lock:
            return len(self._open) // 2

    def wait_for_active(self, count: int, timeout: float) -> bool:
        """Wait until exactly ``count`` connections are being relayed; False if ``timeout`` passed first."""
        with self._lock:
            return self._lock.wait_for(lambda: len(self._open) // 2 == count, timeout)

    def start(self) -> Relay:
        self._listener = listen(self.listen_address)
        self._acceptor = ThreadedAcceptor(
            self._listener, self._serve, max_connections=self._max_connections, name="relay"
        )
        self._acceptor.start()
        log.info("relay %s -> %s started", self.bound_address, self.upstream_address)
        return self

    def stop(self, timeout: float = 5.0) -> None:
        if self._acceptor is None or self._listener is None:
            return
        self._acceptor.stop_accepting(timeout)
        with self._lock:
            for sock in self._open:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)  # wakes pumps blocked in recv
        self._acceptor.join(timeout)
        close_listener(self._listener, self.listen_address)
        log.info("relay %s stopped", self.listen_address)

    def __enter__(self) -> Relay:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _serve(self, client: socket.socket) -> None:
        try:
            upstream = connect(self.upstream_address, self._connect_timeout)
        except TransportError as exc:
            log.warning("relay upstream %s unavailable: %s", self.upstream_address, exc.code)
            return
        with upstream:
            upstream.settimeout(None)
            with self._lock:
                if self._acceptor is not None and self._acceptor.stopping:
                    return
                self._open.update((client, upstream))
                self._lock.notify_all()
            try:
                back = threading.Thread(target=_pump, args=(upstream, client), name="relay-pump", daemon=True)
                back.start()
                _pump(client, upstream)
                back.join()
            finally:
                with self._lock:
                    self._open.discard(client)
                    self._open.discard(upstream)
                    self._lock.notify_all()


def _pump(source: socket.socket, sink: socket.socket) -> None:
    """Copy until ``source`` ends, then tell ``sink`` no more is coming (half-close)."""
    buffer = bytearray(_BUFFER)
    view = memoryview(buffer)
    try:
        while True:
            n = source.recv_into(buffer)
            if n == 0:
                break
            sink.sendall(view[:n])
    except OSError:
        # One side reset: stop both directions rather than leave the peer waiting forever.
        with contextlib.suppress(OSError):
            source.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_RDWR)
        return
    with contextlib.suppress(OSError):
        sink.shutdown(socket.SHUT_WR)
