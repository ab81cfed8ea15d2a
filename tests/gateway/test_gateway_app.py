"""The gateway against a scripted enclave peer on a real Unix socket (the transport seam, not mocks),
and with its seams swapped: a scripted in-memory link and a fake clock (``create_app(link=, clock=)``)."""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from gateway_fakes import FakeClock, ScriptedLink
from prometheus_client.parser import text_string_to_metric_families

from nitro_llm.gateway.admission import AccessSettings
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.auth import ANONYMOUS, add_client
from nitro_llm.gateway.ratelimit import Limiter
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.protocol.frame_codec import FrameDecoder, encode_frame, read_frame

Script = Callable[[socket.socket, dict], None]


class ScriptedEnclave:
    """Answers each connection by running ``script(conn, first_frame)``; records what it received."""

    def __init__(self, path: Path, script: Script) -> None:
        self.received: list[dict] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(16)
        self.script = script
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                frame = read_frame(conn)
                if frame is None:
                    continue
                self.received.append(frame)
                if frame["t"] == "ping":
                    conn.sendall(encode_frame({"t": "pong", "kms_decrypt_calls": 0}))
                elif frame["t"] == "credentials":
                    conn.sendall(encode_frame({"t": "ok"}))
                else:
                    self.script(conn, frame)

    def close(self) -> None:
        self.sock.close()


def answer_three_chunks(conn: socket.socket, frame: dict) -> None:
    for seq in range(3):
        conn.sendall(encode_frame({"t": "chunk", "seq": seq, "final": seq == 2, "ct": b"\x01" * 20}))


def die_after_one_chunk(conn: socket.socket, frame: dict) -> None:
    conn.sendall(encode_frame({"t": "chunk", "seq": 0, "final": False, "ct": b"\x01" * 20}))


@pytest.fixture
def make_gateway(tmp_path: Path) -> Iterator[Callable[..., tuple[TestClient, ScriptedEnclave]]]:
    enclaves: list[ScriptedEnclave] = []

    def make(script: Script = answer_three_chunks, **settings: object) -> tuple[TestClient, ScriptedEnclave]:
        path = tmp_path / f"enclave{len(enclaves)}.sock"
        enclave = ScriptedEnclave(path, script)
        enclaves.append(enclave)
        app = create_app(GatewaySettings(enclave=f"unix:{path}", **settings))
        return TestClient(app), enclave

    yield make
    for e in enclaves:
        e.close()


def frames_of(body: bytes) -> list[dict]:
    decoder = FrameDecoder()
    frames = decoder.feed(body)
    decoder.close()
    return frames


def test_relays_envelope_and_streams_frames(make_gateway):
    client, enclave = make_gateway()
    r = client.post("/v1/infer", content=b"sealed-bytes")
    assert r.status_code == 200
    assert [f["seq"] for f in frames_of(r.content)] == [0, 1, 2]
    assert enclave.received[-1] == {"t": "infer", "envelope": b"sealed-bytes"}


def test_oversized_body_refused_before_reaching_enclave(make_gateway):
    client, enclave = make_gateway(max_body_bytes=1000)
    r = client.post("/v1/infer", content=b"x" * 1001)
    assert r.status_code == 413
    assert r.json()["code"] == "request_too_large"
    assert not enclave.received


def test_empty_body_is_bad_request(make_gateway):
    client, _ = make_gateway()
    assert client.post("/v1/infer", content=b"").status_code == 400


def test_enclave_down_is_503_with_retry_after(tmp_path):
    app = create_app(GatewaySettings(enclave=f"unix:{tmp_path / 'nobody.sock'}", connect_timeout=1))
    client = TestClient(app)
    r = client.post("/v1/infer", content=b"sealed")
    assert r.status_code == 503
    assert r.headers["retry-after"]
    assert r.json()["code"] == "enclave_unavailable"
    assert client.get("/healthz").status_code == 503


def test_enclave_dying_mid_stream_ends_with_typed_error_frame(make_gateway):
    client, _ = make_gateway(die_after_one_chunk)
    r = client.post("/v1/infer", content=b"sealed")
    frames = frames_of(r.content)
    assert frames[0]["t"] == "chunk"
    assert frames[-1]["t"] == "error" and frames[-1]["code"] == "enclave_unavailable"


def test_healthz_and_stats(make_gateway):
    client, _ = make_gateway()
    assert client.get("/healthz").json() == {"gateway": "ok", "enclave": "ok"}
    assert client.get("/v1/enclave/stats").json() == {"kms_decrypt_calls": 0}


def scripted_app(**seams: Any) -> tuple[TestClient, ScriptedLink, FakeClock]:
    link, clock = ScriptedLink(), FakeClock()
    # An address nothing listens on: a test passes only if nothing ever tries to reach it.
    settings = GatewaySettings(enclave="unix:/nonexistent/enclave.sock")
    return TestClient(create_app(settings, link=link, clock=clock, **seams)), link, clock


def test_injected_link_and_limiter_carry_the_requests():
    limiter = Limiter()
    client, link, _ = scripted_app(limiter=limiter)
    r = client.post("/v1/infer", content=b"sealed-bytes")
    assert r.status_code == 200 and [f["seq"] for f in frames_of(r.content)] == [0, 1, 2]
    assert link.received[-1] == {"t": "infer", "envelope": b"sealed-bytes"}
    assert limiter.active(ANONYMOUS) == 0  # the slot was taken and given back
    assert client.get("/healthz").json() == {"gateway": "ok", "enclave": "ok"}


def test_busy_enclave_is_429_with_retry_after():
    client, link, _ = scripted_app()
    link.first_frame = {"t": "error", "code": "enclave_busy", "message": "queue full", "retryable": True}
    r = client.post("/v1/infer", content=b"sealed")
    assert r.status_code == 429 and r.json()["code"] == "enclave_busy"
    assert r.headers["retry-after"] == "1"


def test_outage_is_timed_on_the_injected_clock():
    client, link, clock = scripted_app()
    assert client.get("/healthz").status_code == 200
    link.down = True
    assert client.get("/healthz").status_code == 200  # a pong less than a second old still stands
    clock.advance(1.5)
    down = client.get("/healthz")
    assert down.status_code == 503 and down.json()["supervision"]["state"] == "down"
    clock.advance(30)
    assert client.get("/healthz").json()["supervision"]["down_seconds"] == 30.0
    r = client.post("/v1/infer", content=b"sealed")
    assert r.status_code == 503 and r.headers["retry-after"]
    assert link.infer_count() == 0  # refused at the door while the enclave is known to be down


def test_gateway_imports_nothing_that_decrypts():
    """The trust boundary in code: nothing under gateway/ may import the enclave, the client or the
    protocol's sealing code (a gateway that can decrypt is one bug away from doing it)."""
    import ast

    forbidden = (
        "nitro_llm.enclave",
        "nitro_llm.client",
        "nitro_llm.protocol.kms_envelope",
        "nitro_llm.kms.cms",
    )
    root = Path(__file__).resolve().parents[2] / "nitro_llm" / "gateway"
    for path in root.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            for name in names:
                assert not name.startswith(forbidden), f"{path.name} imports {name}"


def test_client_config_repr_hides_secrets():
    from nitro_llm.client.config import ClientConfig

    config = ClientConfig(
        gateway_url="http://127.0.0.1:1",
        key_id="alias/k",
        credentials={"access_key_id": "AKIA", "secret_access_key": "very-secret"},
        api_token="nlt_token-secret",
    )
    assert "very-secret" not in repr(config) and "token-secret" not in repr(config)


def _metered(client: TestClient) -> tuple[dict[tuple[str, str], float], dict[str, float]]:
    """/metrics as (route, outcome) -> requests and route -> observed durations."""
    requests: dict[tuple[str, str], float] = {}
    observed: dict[str, float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for sample in family.samples:
            if sample.name == "nitro_llm_gateway_requests_total":
                requests[(sample.labels["route"], sample.labels["outcome"])] = sample.value
            if sample.name == "nitro_llm_gateway_seconds_count":
                observed[sample.labels["route"]] = sample.value
    return requests, observed


def test_metrics_count_every_request_once_and_agree_with_the_histogram(tmp_path):
    """Before: refusals were counted where raised, durations only for answers (16 against 6)."""
    tokens = tmp_path / "tokens.json"
    token = add_client(tokens, "someone")
    client, link, _ = scripted_app(access=AccessSettings(tokens_file=tokens))
    auth = {"authorization": f"Bearer {token}"}
    for _ in range(3):
        assert client.post("/v1/infer", content=b"sealed", headers=auth).status_code == 200
    assert client.post("/v1/infer", content=b"sealed").status_code == 401
    assert client.post("/v1/infer", content=b"", headers=auth).status_code == 400
    link.first_frame = {"t": "error", "code": "decrypt_failed", "message": "m", "retryable": False}
    assert client.post("/v1/infer", content=b"sealed", headers=auth).status_code == 200
    link.first_frame = {"t": "error", "code": "enclave_busy", "message": "m", "retryable": True}
    assert client.post("/v1/infer", content=b"sealed", headers=auth).status_code == 429
    assert client.get("/v1/attestation", params={"nonce": "00" * 32}, headers=auth).status_code >= 400
    for _ in range(4):  # monitoring routes are not requests to the enclave: not counted
        client.get("/healthz")
        client.get("/metrics")

    requests, observed = _metered(client)
    assert requests[("/v1/infer", "ok")] == 3
    assert requests[("/v1/infer", "unauthorized")] == 1
    assert requests[("/v1/infer", "bad_request")] == 1
    assert requests[("/v1/infer", "decrypt_failed")] == 1
    assert requests[("/v1/infer", "enclave_busy")] == 1
    assert sum(v for (route, _), v in requests.items() if route == "/v1/attestation") == 1
    assert {route for route, _ in requests} == set(observed)
    for route, count in observed.items():
        assert count == sum(v for (r, _), v in requests.items() if r == route)
