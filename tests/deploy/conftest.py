"""Fixtures for the deploy tests: a real HTTP metadata server on 127.0.0.1 that behaves like EC2's
IMDS (v2 required, or v1 only)."""

from __future__ import annotations

import json
import secrets
import socket
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))  # image_standin and standins, for the tests


@dataclass
class FakeImdsState:
    mode: str = "v2"  # "v2": token required; "v1": PUT refused, GETs answered without a token
    role: str | None = "nitro-llm-enclave"
    instance_id: str = "i-0123456789abcdef0"
    region: str = "eu-west-1"
    credentials_lifetime: timedelta = timedelta(hours=6)
    put_status: int = 405  # what a v1-only server answers to the token PUT
    tokens: set[str] = field(default_factory=set)
    issued: int = 0  # how many credential sets were served
    requests: list[tuple[str, str, dict[str, str]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def credentials(self) -> dict[str, str]:
        with self.lock:
            self.issued += 1
            n = self.issued
        expires = datetime.now(UTC) + self.credentials_lifetime
        return {
            "Code": "Success",
            "LastUpdated": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "Type": "AWS-HMAC",
            "AccessKeyId": f"ASIAFAKE{n:012d}",
            "SecretAccessKey": f"fake-secret-{n}",
            "Token": f"fake-session-token-{n}",
            "Expiration": expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
        }


class _Handler(BaseHTTPRequestHandler):
    state: FakeImdsState

    def log_message(self, *args: object) -> None:  # keep test output clean
        pass

    def _send(self, status: int, body: str = "", headers: dict[str, str] | None = None) -> None:
        data = body.encode()
        self.send_response(status)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_PUT(self) -> None:
        st = self.state
        st.requests.append(("PUT", self.path, dict(self.headers)))
        if st.mode == "v1":
            self._send(st.put_status)
            return
        if self.path != "/latest/api/token":
            self._send(404)
            return
        ttl = self.headers.get("X-aws-ec2-metadata-token-ttl-seconds")
        if not ttl or not ttl.isdigit() or not 1 <= int(ttl) <= 21600:
            self._send(400)
            return
        token = secrets.token_urlsafe(24)
        st.tokens.add(token)
        self._send(200, token, {"X-aws-ec2-metadata-token-ttl-seconds": ttl})

    def do_GET(self) -> None:
        st = self.state
        st.requests.append(("GET", self.path, dict(self.headers)))
        if st.mode == "v2" and self.headers.get("X-aws-ec2-metadata-token") not in st.tokens:
            self._send(401)
            return
        base = "/latest/meta-data/iam/security-credentials/"
        if self.path == "/latest/meta-data/instance-id":
            self._send(200, st.instance_id)
        elif self.path == "/latest/meta-data/placement/region":
            self._send(200, st.region)
        elif self.path == base:
            self._send(200, st.role) if st.role else self._send(404)
        elif st.role and self.path == base + st.role:
            self._send(200, json.dumps(st.credentials()))
        else:
            self._send(404)


class FakeImds:
    def __init__(self, state: FakeImdsState | None = None) -> None:
        self.state = state or FakeImdsState()
        handler = type("Handler", (_Handler,), {"state": self.state})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def __enter__(self) -> FakeImds:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


@pytest.fixture
def fake_imds() -> Iterator[FakeImds]:
    with FakeImds() as server:
        yield server


@pytest.fixture
def free_port() -> int:
    """A loopback port with nothing listening on it (bound, then released)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]
