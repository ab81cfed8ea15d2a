import asyncio
import os
import socket
import stat
import threading

import pytest

from nitro_llm.transport import connect, listen, open_connection, parse_address
from nitro_llm.transport.address import Address
from nitro_llm.transport.errors import (
    AddressError,
    AddressInUseError,
    ConnectFailedError,
    TransportUnavailableError,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("unix:/tmp/x.sock", Address("unix", path="/tmp/x.sock")),
        ("vsock:16:5000", Address("vsock", cid=16, port=5000)),
        ("vsock:any:5000", Address("vsock", cid=0xFFFFFFFF, port=5000)),
        ("tcp:127.0.0.1:8443", Address("tcp", host="127.0.0.1", port=8443)),
        ("tcp:[::1]:80", Address("tcp", host="::1", port=80)),
        ("tcp:localhost:0", Address("tcp", host="localhost", port=0)),
    ],
)
def test_parse(text, expected):
    assert parse_address(text) == expected
    assert parse_address(str(expected)) == expected


@pytest.mark.parametrize(
    "text",
    [
        "",
        "unix:",
        "/tmp/x",
        "http://x:1",
        "tcp:host",
        "tcp::80",
        "tcp:h:70000",
        "tcp:h:-1",
        "vsock:x:1",
        "vsock:3:",
        "udp:h:1",
    ],
)
def test_parse_rejects(text):
    with pytest.raises(AddressError):
        parse_address(text)


def _echo_once(server: socket.socket) -> threading.Thread:
    def run():
        conn, _ = server.accept()
        with conn:
            while data := conn.recv(65536):
                conn.sendall(data)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def test_unix_listen_connect_and_permissions(tmp_path):
    path = tmp_path / "s.sock"
    with listen(f"unix:{path}") as server:
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
        t = _echo_once(server)
        with connect(f"unix:{path}", 5) as c:
            c.sendall(b"hello")
            c.shutdown(socket.SHUT_WR)
            assert c.recv(100) == b"hello"
        t.join(5)


def test_unix_stale_socket_replaced_live_one_refused(tmp_path):
    path = tmp_path / "s.sock"
    stale = socket.socket(socket.AF_UNIX)
    stale.bind(str(path))
    stale.close()  # file left behind, nobody listening
    with listen(f"unix:{path}"):
        with pytest.raises(AddressInUseError):
            listen(f"unix:{path}")  # a live listener is never stolen
    (tmp_path / "file").write_text("x")
    with pytest.raises(AddressInUseError):
        listen(f"unix:{tmp_path / 'file'}")


def test_tcp_port_zero_and_connect():
    with listen("tcp:127.0.0.1:0") as server:
        port = server.getsockname()[1]
        t = _echo_once(server)
        with connect(f"tcp:127.0.0.1:{port}", 5) as c:
            c.sendall(b"x" * 100_000)
            c.shutdown(socket.SHUT_WR)
            got = b""
            while data := c.recv(65536):
                got += data
            assert got == b"x" * 100_000
        t.join(5)


def test_connect_failures_are_typed(tmp_path):
    with pytest.raises(ConnectFailedError) as err:
        connect(f"unix:{tmp_path / 'none.sock'}", 1)
    assert err.value.retryable
    with listen("tcp:127.0.0.1:0") as s:
        port = s.getsockname()[1]
    with pytest.raises(ConnectFailedError):
        connect(f"tcp:127.0.0.1:{port}", 1)


@pytest.mark.parametrize("kind", ["unix", "tcp"])
def test_open_connection_is_connect_for_asyncio(tmp_path, kind):
    address = f"unix:{tmp_path / 's.sock'}" if kind == "unix" else "tcp:127.0.0.1:0"
    with listen(address) as server:
        if kind == "tcp":
            address = f"tcp:127.0.0.1:{server.getsockname()[1]}"
        t = _echo_once(server)

        async def exchange() -> bytes:
            reader, writer = await open_connection(address, 5)
            writer.write(b"hello")
            writer.write_eof()
            try:
                return await reader.read()
            finally:
                writer.close()
                await writer.wait_closed()

        assert asyncio.run(exchange()) == b"hello"
        t.join(5)


def test_open_connection_failures_are_typed(tmp_path):
    with pytest.raises(ConnectFailedError) as err:
        asyncio.run(open_connection(f"unix:{tmp_path / 'none.sock'}", 1))
    assert err.value.retryable
    with pytest.raises(AddressError):
        asyncio.run(open_connection("nowhere", 1))


def test_vsock_when_available():
    """AF_VSOCK needs kernel support: bind or skip, never fail for the machine's sake."""
    if not hasattr(socket, "AF_VSOCK"):
        pytest.skip("no AF_VSOCK in this Python")
    port = 40000 + os.getpid() % 20000
    try:
        server = listen(f"vsock:any:{port}")
    except TransportUnavailableError as exc:
        pytest.skip(f"vsock unavailable here: {exc.code}")
    with server:
        assert server.getsockname()[1] == port
        t = _echo_once(server)
        try:
            client = connect(f"vsock:1:{port}", 5)  # CID 1: local loopback
        except ConnectFailedError:
            pytest.skip("vsock loopback transport not loaded")
        with client:
            client.sendall(b"ping")
            client.shutdown(socket.SHUT_WR)
            assert client.recv(10) == b"ping"
        t.join(5)
