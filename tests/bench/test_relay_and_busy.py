"""The gateway's relay pieces added for speed and overload: frames split at any byte boundary
come out whole and in order, and an enclave_busy refusal becomes 429 with Retry-After."""

from __future__ import annotations

import socket
import threading
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import given, settings
from hypothesis import strategies as st

from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.busy import busy_refusal
from nitro_llm.gateway.enclave_link import split_frames
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.protocol.errors import FrameError, FrameTooLargeError
from nitro_llm.protocol.frame_codec import FrameDecoder, encode_frame, read_frame


def chunk(seq: int, final: bool = False, size: int = 20) -> bytes:
    return encode_frame({"t": "chunk", "seq": seq, "final": final, "ct": b"\x01" * size})


def frames_of(data: bytes) -> list[dict]:
    decoder = FrameDecoder()
    out = decoder.feed(data)
    decoder.close()
    return out


@settings(max_examples=200, deadline=None)
@given(
    sizes=st.lists(st.integers(0, 300), min_size=1, max_size=6),
    cuts=st.lists(st.integers(1, 97), max_size=30),
)
def test_any_split_gives_the_same_frames_in_order(sizes, cuts):
    stream = b"".join(chunk(i, i == len(sizes) - 1, s) for i, s in enumerate(sizes)) + chunk(99)
    pending, relayed, done, at = bytearray(), bytearray(), False, 0
    pieces = []
    for cut in cuts:
        pieces.append(stream[at : at + cut])
        at += cut
    pieces.append(stream[at:])
    for piece in pieces:
        ready, done = split_frames(pending, piece, 1 << 20)
        relayed += ready
        if done:
            break
    assert done
    assert [f["seq"] for f in frames_of(bytes(relayed))] == list(range(len(sizes)))  # nothing after final


def test_oversize_and_garbage_frames_raise():
    with pytest.raises(FrameTooLargeError):
        split_frames(bytearray(), (10_000).to_bytes(4, "big"), 1000)
    with pytest.raises(FrameError):
        split_frames(bytearray(), (3).to_bytes(4, "big") + b"\xff\xff\xff", 1000)


def test_error_frame_ends_the_answer():
    data = encode_frame(
        {"t": "error", "code": "inference_failed", "message": "m", "hint": "h", "retryable": False}
    )
    ready, done = split_frames(bytearray(), data + chunk(0), 1000)
    assert done and ready == data


def test_only_busy_codes_are_refusals():
    def error(code: str) -> bytes:
        return encode_frame({"t": "error", "code": code, "message": "m", "hint": "h", "retryable": True})

    assert busy_refusal(error("enclave_busy")).status_code == 429
    assert busy_refusal(error("replay_cache_full")).retry_after
    assert busy_refusal(error("decrypt_failed")) is None
    assert busy_refusal(chunk(0) + error("enclave_busy")) is None


class _Enclave:
    """A scripted enclave on a real Unix socket: answers every infer with ``reply`` bytes."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        self.sock.listen(8)
        self.reply = reply
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                if read_frame(conn) is not None:
                    conn.sendall(self.reply)


@pytest.mark.parametrize(
    ("code", "status"), [("enclave_busy", 429), ("replay_cache_full", 429), ("decrypt_failed", 200)]
)
def test_gateway_maps_busy_to_429_with_retry_after(tmp_path, code, status):
    reply = encode_frame({"t": "error", "code": code, "message": "m", "hint": "h", "retryable": True})
    enclave = _Enclave(tmp_path / "e.sock", reply)
    try:
        client = TestClient(create_app(GatewaySettings(enclave=f"unix:{tmp_path / 'e.sock'}")))
        r = client.post("/v1/infer", content=b"sealed")
        assert r.status_code == status
        if status == 429:
            assert int(r.headers["retry-after"]) >= 1
            assert r.json()["code"] == "enclave_busy" and r.json()["retryable"] is True
        else:
            assert frames_of(r.content)[0]["code"] == code  # other refusals stay frames for the client
    finally:
        enclave.sock.close()


def test_gateway_relays_frames_that_arrived_together(tmp_path):
    enclave = _Enclave(tmp_path / "e.sock", chunk(0) + chunk(1) + chunk(2, final=True) + chunk(3))
    try:
        client = TestClient(create_app(GatewaySettings(enclave=f"unix:{tmp_path / 'e.sock'}")))
        r = client.post("/v1/infer", content=b"sealed")
        assert r.status_code == 200
        assert [f["seq"] for f in frames_of(r.content)] == [0, 1, 2]
    finally:
        enclave.sock.close()
