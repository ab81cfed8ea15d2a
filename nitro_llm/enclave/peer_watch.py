"""Notice that the gateway hung up, even while a request waits or its prompt is being read.

A request only writes to its connection when a token is ready, so a client that left while its
request sat in the queue (or during a long prompt) would hold a batch slot until then. One thread
watches every connection that has a request in flight with epoll and sets that request's cancel
event when the peer closes the connection (EPOLLHUP: the gateway closed its end) or when the
server stops. A half-close (the peer only shut its write side, as a plain client may after
sending its frame) is not a hang-up: the answer can still be delivered. Where a hang-up is not
reported until we write (TCP, vsock), the next token's failed send cancels the request instead.
"""

from __future__ import annotations

import contextlib
import select
import socket
import threading
from collections.abc import Iterator

_TICK_SECONDS = 0.2


class PeerWatch:
    def __init__(self, stop: threading.Event) -> None:
        self._stop = stop
        self._lock = threading.Lock()
        self._watched: dict[int, threading.Event] = {}
        self._epoll: select.epoll | None = None
        self._thread: threading.Thread | None = None

    @contextlib.contextmanager
    def watching(self, conn: socket.socket) -> Iterator[threading.Event]:
        """The cancel event for one request on ``conn``; set if the peer leaves or the server stops."""
        cancel = threading.Event()
        if self._stop.is_set():
            cancel.set()
        fd = conn.fileno()
        registered = False
        with self._lock:
            if self._start_locked():
                assert self._epoll is not None
                with contextlib.suppress(OSError):
                    self._epoll.register(fd, 0)  # 0: only hang-ups and errors are reported
                    self._watched[fd] = cancel
                    registered = True
        try:
            yield cancel
        finally:
            if registered:
                with self._lock:
                    self._watched.pop(fd, None)
                    if self._epoll is not None:
                        with contextlib.suppress(OSError, ValueError):
                            self._epoll.unregister(fd)

    def _start_locked(self) -> bool:
        if self._thread is None:
            try:
                self._epoll = select.epoll()
            except (AttributeError, OSError):  # not Linux: rely on failed sends alone
                return False
            self._thread = threading.Thread(target=self._run, name="peer-watch", daemon=True)
            self._thread.start()
        return self._epoll is not None

    def _run(self) -> None:
        assert self._epoll is not None
        while True:
            try:
                events = self._epoll.poll(_TICK_SECONDS)
            except OSError:
                return
            with self._lock:
                if self._stop.is_set():
                    for cancel in self._watched.values():
                        cancel.set()
                    if not self._watched:  # the server stopped: no thread left behind
                        self._epoll.close()
                        return
                for fd, mask in events:
                    if mask & (select.EPOLLHUP | select.EPOLLERR):
                        hung_up = self._watched.pop(fd, None)
                        if hung_up is not None:
                            hung_up.set()
                        with contextlib.suppress(OSError, ValueError):
                            self._epoll.unregister(fd)
