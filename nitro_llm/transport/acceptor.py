"""Accept connections on a listening socket and serve each in its own thread, with a bound.

Shared by the relay and the enclave server: both need "one thread per connection, at most N at
once, the rest wait in the listen backlog, and a stop that does not hang in accept()".
"""

from __future__ import annotations

import contextlib
import errno
import logging
import socket
import threading
from collections.abc import Callable

log = logging.getLogger(__name__)

_POLL_SECONDS = 0.2  # how quickly the accept loop notices a stop


class ThreadedAcceptor:
    def __init__(
        self,
        listener: socket.socket,
        handle: Callable[[socket.socket], None],
        *,
        max_connections: int,
        name: str,
    ) -> None:
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self._listener = listener
        self._handle = handle
        self._slots = threading.BoundedSemaphore(max_connections)
        self._name = name
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._thread: threading.Thread | None = None
        self.accepted = 0

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def start(self) -> None:
        self._listener.settimeout(_POLL_SECONDS)
        self._thread = threading.Thread(target=self._loop, name=f"{self._name}-accept", daemon=True)
        self._thread.start()

    def stop_accepting(self, timeout: float = 5.0) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout)

    def join(self, timeout: float = 5.0) -> None:
        """Wait for the connections being served (after :meth:`stop_accepting`)."""
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(timeout)

    def _loop(self) -> None:
        while not self._stop.is_set():
            if not self._slots.acquire(timeout=_POLL_SECONDS):
                continue  # at the bound: new connections wait in the backlog
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                self._slots.release()
                continue
            except OSError as exc:
                self._slots.release()
                if self._stop.is_set() or exc.errno in (errno.EBADF, errno.EINVAL):
                    return  # the listener is closed: nothing more to accept
                # Transient (EMFILE, ENOBUFS, ECONNABORTED...): a burst of connections must not
                # stop the server for good. Pause so a persistent error does not spin.
                log.warning(
                    "%s: accept failed (%s); retrying", self._name, errno.errorcode.get(exc.errno or 0, "?")
                )
                self._stop.wait(_POLL_SECONDS)
                continue
            conn.settimeout(None)
            thread = threading.Thread(
                target=self._serve, args=(conn,), name=f"{self._name}-conn", daemon=True
            )
            with self._lock:
                self._threads.add(thread)
                self.accepted += 1
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self._handle(conn)
        except Exception as exc:  # a handler bug must not leak the slot or kill the server
            log.warning("%s: connection handler failed (%s)", self._name, type(exc).__name__)
        finally:
            with contextlib.suppress(OSError):
                conn.close()
            with self._lock:
                self._threads.discard(threading.current_thread())
            self._slots.release()
