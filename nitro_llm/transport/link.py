"""``listen``, ``connect`` and ``open_connection`` (asyncio) for any link address: the one seam for
the enclave link.

Unix sockets stand in for vsock in local mode; the caller code is the same for both. A Unix socket
is created private to the user (0600), and a stale socket file left by a crashed process is
replaced only when nothing answers on it, so a second server cannot silently steal the address.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import socket
import stat

from nitro_llm.transport.address import Address, parse_address
from nitro_llm.transport.errors import AddressInUseError, ConnectFailedError, TransportUnavailableError

DEFAULT_BACKLOG = 64
DEFAULT_STREAM_LIMIT = 2**20
"""Largest line or chunk an asyncio reader from :func:`open_connection` buffers."""


def _as_address(address: str | Address) -> Address:
    return address if isinstance(address, Address) else parse_address(address)


def listen(address: str | Address, *, backlog: int = DEFAULT_BACKLOG) -> socket.socket:
    """A bound, listening socket. For tcp port 0, read the chosen port from ``getsockname()``."""
    addr = _as_address(address)
    sock = _new_socket(addr)
    try:
        if addr.kind == "tcp":
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if addr.kind == "unix":
            _clear_stale_unix_socket(addr.path)
        sock.bind(addr.sockaddr)
        if addr.kind == "unix":
            # Connecting needs write permission; the usual umask already withholds it from others,
            # and chmod (not a process-wide umask change) keeps other threads' files untouched.
            os.chmod(addr.path, 0o600)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise AddressInUseError(f"{addr} is already in use") from None
        if addr.kind == "vsock":
            raise TransportUnavailableError(f"cannot listen on {addr} ({_errname(exc)})") from None
        raise ConnectFailedError(
            f"cannot listen on {addr} ({_errname(exc)})", hint="check the path or port"
        ) from None
    except BaseException:
        sock.close()
        raise
    return sock


def close_listener(sock: socket.socket, address: str | Address) -> None:
    """Close a socket made by :func:`listen`, removing its Unix socket file so the path is free."""
    sock.close()
    addr = _as_address(address)
    if addr.kind == "unix":
        with contextlib.suppress(FileNotFoundError):
            os.unlink(addr.path)


def connect(address: str | Address, timeout: float | None) -> socket.socket:
    """A connected socket; ``timeout`` bounds the connect and stays as the socket's I/O timeout."""
    addr = _as_address(address)
    sock = _new_socket(addr)
    sock.settimeout(timeout)
    try:
        sock.connect(addr.sockaddr)
    except OSError as exc:
        sock.close()
        raise ConnectFailedError(f"cannot connect to {addr} ({_errname(exc)})") from None
    if addr.kind == "tcp":
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # streamed tokens are small writes
    return sock


async def open_connection(
    address: str | Address, timeout: float, *, limit: int = DEFAULT_STREAM_LIMIT
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """:func:`connect` for asyncio: connected on the running loop (no thread hop; ``timeout`` bounds
    the connect only), as a reader/writer pair whose reader buffers at most ``limit`` bytes."""
    addr = _as_address(address)
    sock = _new_socket(addr)
    sock.setblocking(False)
    try:
        await asyncio.wait_for(asyncio.get_running_loop().sock_connect(sock, addr.sockaddr), timeout)
    except TimeoutError:
        sock.close()
        raise ConnectFailedError(f"cannot connect to {addr} (timed out after {timeout:g} s)") from None
    except OSError as exc:
        sock.close()
        raise ConnectFailedError(f"cannot connect to {addr} ({_errname(exc)})") from None
    except BaseException:
        sock.close()
        raise
    # asyncio sets TCP_NODELAY on tcp sockets itself.
    return await asyncio.open_connection(sock=sock, limit=limit)


def _new_socket(addr: Address) -> socket.socket:
    try:
        return socket.socket(addr.family, socket.SOCK_STREAM)
    except OSError as exc:
        raise TransportUnavailableError(f"cannot create a {addr.kind} socket ({_errname(exc)})") from None


def _clear_stale_unix_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise AddressInUseError(
            f"unix:{path} exists and is not a socket", hint="remove it or choose another path"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)  # nobody listening: a leftover from a process that died
        return
    finally:
        probe.close()
    raise AddressInUseError(f"unix:{path} already has a listener")


def _errname(exc: OSError) -> str:
    return errno.errorcode.get(exc.errno or 0, type(exc).__name__)
