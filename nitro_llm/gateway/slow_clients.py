"""Bounds on how long and how much a client may take to say what it wants (slowloris defence).

uvicorn times out idle keep-alive connections, but not a request whose headers are still arriving:
a client that opens a connection and sends one header byte every few seconds holds it forever, and
enough of them exhaust the server. This protocol arms a deadline as soon as a request is awaited
(connection opened, or the previous answer sent) and closes the connection with 408 if the headers
are not complete by then. Header size is bounded by h11 (``max_header_bytes``) and the number of
open connections by ``max_connections``; the body has its own deadline in the admission layer.
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEP_ALIVE = 5
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_CONNECTIONS = 1024
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 32\r\n"
    b"connection: close\r\n\r\nrequest headers took too long.\r\n"
)


class HeaderDeadlineProtocol(H11Protocol):
    """H11Protocol with a deadline for each request's headers. Subclassed by :func:`protocol_class`
    to carry the configured timeout (uvicorn instantiates protocols with its own arguments)."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    closed_slow = 0
    """Connections closed for slow headers (process-wide), for the figures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self._awaiting_headers():
            self._arm()
        else:
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        # The keep-alive timer covers a silent connection; this one covers a dribbling one.
        if self._awaiting_headers() and not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _awaiting_headers(self) -> bool:
        idle = self.conn.their_state is h11.IDLE
        return idle and (self.cycle is None or self.cycle.response_complete)

    def _arm(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None

    def _expired(self) -> None:
        self._header_timer = None
        if self.transport.is_closing() or not self._awaiting_headers():
            return
        HeaderDeadlineProtocol.closed_slow += 1
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            self.transport.write(_TIMEOUT_RESPONSE)
        self.transport.close()


def protocol_class(header_timeout: float) -> type[HeaderDeadlineProtocol]:
    if header_timeout <= 0:
        raise ValueError("header_timeout must be positive")
    attrs = {"header_timeout": header_timeout}
    return type("HeaderDeadlineProtocolConfigured", (HeaderDeadlineProtocol,), attrs)


def uvicorn_options(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keep_alive: int = DEFAULT_KEEP_ALIVE,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that bound slow and greedy clients."""
    return {
        "http": protocol_class(header_timeout),
        "timeout_keep_alive": keep_alive,
        "h11_max_incomplete_event_size": max_header_bytes,
        "limit_concurrency": max_connections,
    }
