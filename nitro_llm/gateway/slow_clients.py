"""Bounds on how long and how much a client may take to say what it wants (slowloris defence).

uvicorn times out idle keep-alive connections (``timeout_keep_alive``), but not a request whose
headers are still arriving: a client that opens a connection and sends one header byte every few
seconds holds it forever, and enough of them exhaust the server. :class:`HeaderDeadline` puts a
deadline on each request's headers and closes the connection with 408 when they are not complete
by then. Header size is bounded by h11 (``h11_max_incomplete_event_size``) and the number of open
connections by ``limit_concurrency``; the body has its own deadline in the admission layer.

Built on public interfaces only, so any uvicorn release that keeps them will do: uvicorn's
``http=`` option takes an asyncio protocol class, which here wraps uvicorn's own h11 protocol
(looked up by its public name in ``uvicorn.config.HTTP_PROTOCOLS``) without touching its insides.
The wrapper sees the client's bytes before uvicorn does, and uvicorn's answers on their way out
(through a transport that passes everything on), and replays both with h11 parsers of its own to
know where each request starts and whether an answer is still being sent.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any

import h11
from uvicorn.config import HTTP_PROTOCOLS
from uvicorn.importer import import_from_string

DEFAULT_HEADER_TIMEOUT = 10.0
DEFAULT_KEEP_ALIVE = 5
DEFAULT_MAX_HEADER_BYTES = 16 * 1024
DEFAULT_MAX_CONNECTIONS = 1024
_TIMEOUT_RESPONSE = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: text/plain\r\ncontent-length: 32\r\n"
    b"connection: close\r\n\r\nrequest headers took too long.\r\n"
)
_BODY_HEADERS = frozenset({b"content-length", b"transfer-encoding"})


class _Exchanges:
    """Where one connection stands, from its bytes alone: the client's requests replayed into a
    server-side h11 parser (answered with nothing), and each request's head replayed into a
    client-side one that reads uvicorn's answers. Raises ``h11.ProtocolError`` once it can no longer
    tell (malformed, HTTP/1.0, upgraded or closing): timing then stops for the connection."""

    def __init__(self, max_header_bytes: int) -> None:
        # One byte more than uvicorn allows: uvicorn refuses oversized headers (400) first.
        self._requests = h11.Connection(h11.SERVER, max_incomplete_event_size=max_header_bytes + 1)
        self._answers = h11.Connection(h11.CLIENT)
        self._heads: deque[h11.Request] = deque()
        self.unanswered = 0

    @property
    def partial_request(self) -> bool:
        """Some bytes of a request have come, not yet all of its headers."""
        return self._requests.their_state is h11.IDLE and bool(self._requests.trailing_data[0])

    @property
    def awaiting_headers(self) -> bool:
        return self._requests.their_state is h11.IDLE and self.unanswered == 0

    def received(self, data: bytes) -> bool:
        """The client sent ``data``; True if a request's headers were completed by it."""
        parser = self._requests
        parser.receive_data(data)
        completed = False
        while (event := parser.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.Request):
                completed = True
                if event.http_version != b"1.1":
                    raise h11.LocalProtocolError("only HTTP/1.1 connections are followed")
                headers = [(name, value) for name, value in event.headers if name not in _BODY_HEADERS]
                self._heads.append(h11.Request(method=event.method, target=event.target, headers=headers))
                self.unanswered += 1
                parser.send(h11.Response(status_code=204, headers=[]))
                parser.send(h11.EndOfMessage())
                self._next_head()
            elif event is h11.PAUSED:
                parser.start_next_cycle()  # raises unless the request was complete and may be followed
            elif isinstance(event, h11.ConnectionClosed):
                raise h11.LocalProtocolError("the client closed its side")
        return completed

    def sent(self, data: bytes) -> None:
        """uvicorn wrote ``data`` to the client."""
        parser = self._answers
        parser.receive_data(data)
        while (event := parser.next_event()) is not h11.NEED_DATA:
            if isinstance(event, h11.EndOfMessage):
                self.unanswered -= 1
                parser.start_next_cycle()  # raises if the answer closes the connection
                self._next_head()
            elif event is h11.PAUSED or isinstance(event, h11.ConnectionClosed):
                raise h11.LocalProtocolError("output that answers no request")

    def _next_head(self) -> None:
        if self._answers.our_state is h11.IDLE and self._heads:
            self._answers.send(self._heads.popleft())
            self._answers.send(h11.EndOfMessage())


class _WatchedTransport(asyncio.Transport):
    """The connection's transport, as uvicorn gets it: everything is passed on, and what uvicorn
    writes is shown to ``watch`` first."""

    def __init__(self, transport: asyncio.Transport, watch: Callable[[bytes], None]) -> None:
        super().__init__()
        self._transport = transport
        self._watch = watch

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if data:  # an empty write is nothing to h11, where empty input would mean "closed"
            self._watch(bytes(data))
        self._transport.write(data)

    def close(self) -> None:
        self._transport.close()

    def abort(self) -> None:
        self._transport.abort()

    def is_closing(self) -> bool:
        return self._transport.is_closing()

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return self._transport.get_extra_info(name, default)

    def pause_reading(self) -> None:
        self._transport.pause_reading()

    def resume_reading(self) -> None:
        self._transport.resume_reading()

    def is_reading(self) -> bool:
        return self._transport.is_reading()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._transport.set_protocol(protocol)

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._transport.get_protocol()

    def can_write_eof(self) -> bool:
        return self._transport.can_write_eof()

    def write_eof(self) -> None:
        self._transport.write_eof()

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size()

    def get_write_buffer_limits(self) -> tuple[int, int]:
        return self._transport.get_write_buffer_limits()

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self._transport.set_write_buffer_limits(high, low)


class HeaderDeadline(asyncio.Protocol):
    """uvicorn's h11 protocol, with a deadline for each request's headers: from the moment the
    connection opens, and for later requests on it from their first byte once every earlier
    request has had its answer (the silence between requests is uvicorn's keep-alive timeout).
    Made by :func:`protocol_class`, which sets the class attributes; uvicorn instantiates it with
    arguments that are passed on unread."""

    header_timeout: float = DEFAULT_HEADER_TIMEOUT
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
    closed_slow = 0
    """Connections closed for slow headers (process-wide), for the figures."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._inner: asyncio.Protocol = _h11_protocol()(*args, **kwargs)
        self._exchanges: _Exchanges | None = _Exchanges(self.max_header_bytes)
        self._transport: asyncio.Transport | None = None
        self._timer: asyncio.TimerHandle | None = None

    # -- asyncio.Protocol: watch, then hand everything to uvicorn ------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self._transport = transport
        self._inner.connection_made(_WatchedTransport(transport, self._sent))
        self._arm()

    def data_received(self, data: bytes) -> None:
        self._follow(_Exchanges.received, data)
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._inner.connection_lost(exc)

    def pause_writing(self) -> None:
        self._inner.pause_writing()

    def resume_writing(self) -> None:
        self._inner.resume_writing()

    # -- the deadline --------------------------------------------------------------------------
    def _sent(self, data: bytes) -> None:
        self._follow(_Exchanges.sent, data)

    def _follow(self, step: Callable[[_Exchanges, bytes], bool | None], data: bytes) -> None:
        exchanges = self._exchanges
        if exchanges is None:
            return
        try:
            if step(exchanges, data):
                self._disarm()  # a request's headers are complete
        except h11.ProtocolError:
            self._exchanges = None  # uvicorn answers or closes on its own; nothing more to time
            self._disarm()
            return
        if exchanges.partial_request and exchanges.unanswered == 0:
            self._arm()

    def _arm(self) -> None:
        if self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.header_timeout, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        transport, exchanges = self._transport, self._exchanges
        if transport is None or transport.is_closing() or exchanges is None:
            return
        if not exchanges.awaiting_headers:
            return
        HeaderDeadline.closed_slow += 1
        transport.write(_TIMEOUT_RESPONSE)  # no answer is under way: all of them were sent in full
        transport.close()


def _h11_protocol() -> type[asyncio.Protocol]:
    protocol: type[asyncio.Protocol] = import_from_string(HTTP_PROTOCOLS["h11"])
    return protocol


def protocol_class(
    header_timeout: float, max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES
) -> type[HeaderDeadline]:
    if header_timeout <= 0:
        raise ValueError("header_timeout must be positive")
    attrs = {"header_timeout": header_timeout, "max_header_bytes": max_header_bytes}
    return type("HeaderDeadlineConfigured", (HeaderDeadline,), attrs)


def uvicorn_options(
    *,
    header_timeout: float = DEFAULT_HEADER_TIMEOUT,
    keep_alive: int = DEFAULT_KEEP_ALIVE,
    max_header_bytes: int = DEFAULT_MAX_HEADER_BYTES,
    max_connections: int = DEFAULT_MAX_CONNECTIONS,
) -> dict[str, Any]:
    """Keyword arguments for ``uvicorn.run``/``uvicorn.Config`` that bound slow and greedy clients."""
    return {
        "http": protocol_class(header_timeout, max_header_bytes),
        "timeout_keep_alive": keep_alive,
        "h11_max_incomplete_event_size": max_header_bytes,
        "limit_concurrency": max_connections,
    }
