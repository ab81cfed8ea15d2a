import os
import socket
import threading
import time

from nitro_llm.transport import connect, listen
from nitro_llm.transport.relay import Relay


class EchoServer:
    """Upstream for the relay: echoes every byte back, reversed per connection on EOF to prove ordering."""

    def __init__(self, address: str):
        self.sock = listen(address)
        self.sock.settimeout(0.2)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _run(self):
        workers = []
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except TimeoutError:
                continue
            w = threading.Thread(target=self._handle, args=(conn,), daemon=True)
            w.start()
            workers.append(w)
        for w in workers:
            w.join(5)

    @staticmethod
    def _handle(conn):
        conn.settimeout(10)
        with conn:
            received = bytearray()
            while data := conn.recv(65536):
                received += data
            conn.sendall(bytes(reversed(received)))  # answer only after the client half-closed

    def close(self):
        self.stop.set()
        self.thread.join(5)
        self.sock.close()


def _exchange(address: str, payload: bytes) -> bytes:
    with connect(address, 10) as c:
        c.sendall(payload)
        c.shutdown(socket.SHUT_WR)
        out = bytearray()
        while data := c.recv(65536):
            out += data
        return bytes(out)


def test_unix_to_tcp_concurrent_connections_both_ways(tmp_path):
    upstream = EchoServer("tcp:127.0.0.1:0")
    relay = Relay(f"unix:{tmp_path / 'relay.sock'}", f"tcp:127.0.0.1:{upstream.port}", max_connections=4)
    relay.start()
    try:
        results: dict[int, bool] = {}

        def client(i: int):
            payload = os.urandom(1000 * (i + 1) + i)
            results[i] = _exchange(relay.bound_address, payload) == payload[::-1]

        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]  # more than the bound
        for t in threads:
            t.start()
        for t in threads:
            t.join(30)
        assert results == {i: True for i in range(12)}
        assert relay.connections_total == 12
        relay.wait_for_active(0, timeout=5)
        assert relay.active_connections == 0  # every connection closed cleanly
    finally:
        relay.stop()
        upstream.close()
    assert not (tmp_path / "relay.sock").exists()


def test_tcp_to_unix_forwarder_large_payload(tmp_path):
    upstream = EchoServer(f"unix:{tmp_path / 'up.sock'}")
    with Relay("tcp:127.0.0.1:0", f"unix:{tmp_path / 'up.sock'}") as relay:
        payload = os.urandom(3 * 1024 * 1024)
        assert _exchange(relay.bound_address, payload) == payload[::-1]
    upstream.close()


def test_upstream_down_closes_client_and_relay_keeps_serving(tmp_path):
    with listen("tcp:127.0.0.1:0") as s:
        dead_port = s.getsockname()[1]
    with Relay(f"unix:{tmp_path / 'r.sock'}", f"tcp:127.0.0.1:{dead_port}", connect_timeout=1) as relay:
        for _ in range(2):
            try:  # closed, not hung; a reset or broken pipe (we wrote to a closed peer) says the same
                assert _exchange(relay.bound_address, b"hello") == b""
            except (ConnectionResetError, BrokenPipeError):
                pass
        assert relay.active_connections == 0


def test_stop_closes_open_connections(tmp_path):
    upstream = EchoServer("tcp:127.0.0.1:0")
    relay = Relay(f"unix:{tmp_path / 'r.sock'}", f"tcp:127.0.0.1:{upstream.port}").start()
    c = connect(relay.bound_address, 10)
    c.sendall(b"partial")  # never half-closed: the connection stays open
    relay.wait_for_active(1, timeout=5)
    assert relay.active_connections == 1
    started = time.monotonic()
    relay.stop()
    assert time.monotonic() - started < 5
    c.settimeout(5)
    assert c.recv(10) == b""  # the relay closed our side
    c.close()
    upstream.close()
