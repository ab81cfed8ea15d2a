"""make_kms_client's configuration; the emulator's blob format and private atomic state files."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from nitro_llm.kms.client import make_kms_client
from nitro_llm.kms.errors import EmulatorStateError, InvalidCiphertext, KmsConfigError
from nitro_llm_dev.kms_emulator import ciphertext
from nitro_llm_dev.kms_emulator.storage import read_json, write_json_atomic

CREDS = {"arn": "arn:aws:iam::123456789012:user/c", "access_key_id": "AKIAX", "secret_access_key": "s"}


def test_client_timeouts_and_retries():
    client = make_kms_client("http://127.0.0.1:9", CREDS, "us-east-1")
    config = client.meta.config
    assert (config.connect_timeout, config.read_timeout) == (3, 15)
    assert config.retries == {"total_max_attempts": 3, "mode": "standard"}  # 3 attempts in all
    assert client.meta.region_name == "us-east-1"
    assert client.meta.endpoint_url == "http://127.0.0.1:9"
    assert config.proxies == {}  # loopback never goes through a proxy


def test_client_credentials_are_used_and_extra_fields_ignored():
    client = make_kms_client(None, {**CREDS, "session_token": "tok", "expiration": "x"}, "eu-west-1")
    frozen = client._request_signer._credentials.get_frozen_credentials()
    assert (frozen.access_key, frozen.secret_key, frozen.token) == ("AKIAX", "s", "tok")
    assert client.meta.endpoint_url == "https://kms.eu-west-1.amazonaws.com"


@pytest.mark.parametrize(
    ("endpoint", "creds", "region", "message"),
    [
        ("http://127.0.0.1:1", {"access_key_id": "a"}, "us-east-1", "secret_access_key"),
        ("http://127.0.0.1:1", CREDS, "", "region"),
        ("ftp://127.0.0.1:1", CREDS, "us-east-1", "http"),
        ("http://kms.example.com", CREDS, "us-east-1", "loopback"),
    ],
)
def test_client_refusals(endpoint, creds, region, message):
    with pytest.raises(KmsConfigError, match=message):
        make_kms_client(endpoint, creds, region)


KEY_ID = "0b7c1f5e-6f0e-4a43-9a3c-2f9d7d1f0a11"
MATERIAL = os.urandom(32)


def test_blob_round_trip_and_context_order_independence():
    blob = ciphertext.seal(MATERIAL, KEY_ID, b"data", {"a": "1", "b": "2"})
    assert ciphertext.key_id_of(blob) == KEY_ID
    assert ciphertext.open_blob(MATERIAL, blob, {"b": "2", "a": "1"}) == b"data"


@pytest.mark.parametrize(
    "context", [{}, {"a": "1"}, {"a": "1", "b": "3"}, {"a": "1", "b": "2", "c": ""}, {"A": "1", "b": "2"}]
)
def test_blob_refuses_any_other_context(context):
    blob = ciphertext.seal(MATERIAL, KEY_ID, b"data", {"a": "1", "b": "2"})
    with pytest.raises(InvalidCiphertext):
        ciphertext.open_blob(MATERIAL, blob, context)


def test_context_encoding_is_unambiguous():
    assert ciphertext.canonical_context({"ab": "c"}) != ciphertext.canonical_context({"a": "bc"})


def test_blob_refuses_other_material_and_every_bit_flip():
    blob = ciphertext.seal(MATERIAL, KEY_ID, b"data", {})
    with pytest.raises(InvalidCiphertext):
        ciphertext.open_blob(os.urandom(32), blob, {})
    for i in range(len(blob) * 8):
        mutated = bytearray(blob)
        mutated[i // 8] ^= 1 << (i % 8)
        with pytest.raises(InvalidCiphertext):
            ciphertext.open_blob(MATERIAL, bytes(mutated), {})


def test_blob_names_its_key_but_cannot_be_moved_to_another():
    blob = ciphertext.seal(MATERIAL, KEY_ID, b"data", {})
    other = "1b7c1f5e-6f0e-4a43-9a3c-2f9d7d1f0a11"
    moved = blob.replace(KEY_ID.encode(), other.encode())
    assert ciphertext.key_id_of(moved) == other
    with pytest.raises(InvalidCiphertext):
        ciphertext.open_blob(MATERIAL, moved, {})


@pytest.mark.parametrize(
    "blob", [b"", b"NLK1", b"XXXX" + KEY_ID.encode() + bytes(40), b"NLK1" + b"z" * 36 + bytes(40)]
)
def test_blob_header_refusals(blob):
    with pytest.raises(InvalidCiphertext):
        ciphertext.key_id_of(blob)


def test_atomic_json_is_private_and_replaces(tmp_path: Path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1})
    write_json_atomic(path, {"v": 2})
    assert read_json(path) == {"v": 2}
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_atomic_json_keeps_old_state_when_the_write_fails(tmp_path: Path):
    path = tmp_path / "state.json"
    write_json_atomic(path, {"v": 1})
    with pytest.raises(TypeError):
        write_json_atomic(path, {"v": object()})
    assert read_json(path) == {"v": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["state.json"]


def test_read_json_absent_and_corrupt(tmp_path: Path):
    assert read_json(tmp_path / "none.json") is None
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(EmulatorStateError):
        read_json(tmp_path / "bad.json")


def test_client_gives_up_after_three_attempts():
    """Against a server that always answers KMSInternalException (500): exactly three requests."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from botocore.exceptions import ClientError

    hits: list[int] = []

    class Failing(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            hits.append(1)
            body = b'{"__type":"KMSInternalException","message":"boom"}'
            self.send_response(500)
            self.send_header("Content-Type", "application/x-amz-json-1.1")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Failing)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        client = make_kms_client(f"http://127.0.0.1:{server.server_address[1]}", CREDS, "us-east-1")
        with pytest.raises(ClientError) as info:
            client.generate_random(NumberOfBytes=8)
        assert info.value.response["Error"]["Code"] == "KMSInternalException"
        assert len(hits) == 3
    finally:
        server.shutdown()
        server.server_close()
