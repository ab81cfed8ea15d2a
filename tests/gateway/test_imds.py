"""The IMDSv2 client (botocore's metadata fetcher underneath) against a real fake metadata server on
loopback. Moved here from tests/deploy with the code it tests (nitro_llm/gateway/imds.py)."""

from __future__ import annotations

import socket
import threading
from datetime import UTC, datetime, timedelta

import pytest
from botocore.utils import InstanceMetadataFetcher

from nitro_llm.gateway.credentials import RoleCredentials
from nitro_llm.gateway.imds import (
    ImdsClient,
    ImdsCredentialsSource,
    ImdsError,
    ImdsNoRole,
    ImdsUnreachable,
    ImdsV1Only,
)
from nitro_llm.protocol.frame_kinds import credentials_frame


def test_token_first_then_role_then_credentials(fake_imds):
    with ImdsClient(fake_imds.url) as client:
        creds, expires = client.role_credentials()
    methods = [(m, p) for m, p, _ in fake_imds.state.requests]
    assert methods[0] == ("PUT", "/latest/api/token")
    assert methods[1:] == [
        ("GET", "/latest/meta-data/iam/security-credentials/"),
        ("GET", "/latest/meta-data/iam/security-credentials/nitro-llm-enclave"),
    ]
    put_headers = fake_imds.state.requests[0][2]
    assert put_headers["X-aws-ec2-metadata-token-ttl-seconds"] == "21600"
    for _, _, headers in fake_imds.state.requests[1:]:
        assert headers["X-aws-ec2-metadata-token"] in fake_imds.state.tokens
    assert isinstance(creds, RoleCredentials)
    assert creds.access_key_id == "ASIAFAKE000000000001"
    assert creds.secret_access_key == "fake-secret-1"
    assert creds.session_token == "fake-session-token-1"
    assert timedelta(hours=5) < expires - datetime.now(UTC) <= timedelta(hours=6)
    frame = credentials_frame(creds)
    assert frame["t"] == "credentials" and frame["expiration"] == creds.expiration


def test_one_token_reused_across_calls(fake_imds):
    with ImdsClient(fake_imds.url) as client:
        assert client.instance_id() == "i-0123456789abcdef0"
        assert client.region() == "eu-west-1"
        client.role_credentials()
    puts = [r for r in fake_imds.state.requests if r[0] == "PUT"]
    assert len(puts) == 1


def test_rejected_token_is_replaced_once(fake_imds):
    with ImdsClient(fake_imds.url) as client:
        assert client.instance_id()
        fake_imds.state.tokens.clear()  # as after a stop/start: old tokens become invalid
        assert client.instance_id() == "i-0123456789abcdef0"
    puts = [r for r in fake_imds.state.requests if r[0] == "PUT"]
    assert len(puts) == 2


def test_token_renewed_before_its_ttl_runs_out(fake_imds):
    clock = [datetime(2030, 1, 1, tzinfo=UTC)]
    with ImdsClient(fake_imds.url, token_ttl_seconds=600, now=lambda: clock[0]) as client:
        client.instance_id()
        clock[0] += timedelta(seconds=500)
        client.instance_id()
        assert len([r for r in fake_imds.state.requests if r[0] == "PUT"]) == 1
        clock[0] += timedelta(seconds=50)  # within a minute of the token's expiry
        client.instance_id()
    assert len([r for r in fake_imds.state.requests if r[0] == "PUT"]) == 2


def test_source_caches_then_refreshes_within_margin(fake_imds):
    start = datetime.now(UTC)
    clock = [start]
    fake_imds.state.credentials_lifetime = timedelta(hours=1)
    source = ImdsCredentialsSource(ImdsClient(fake_imds.url), now=lambda: clock[0])
    first = source.get()
    assert source.get() is first  # cached: no second credentials request
    assert fake_imds.state.issued == 1
    clock[0] = start + timedelta(minutes=54)  # still more than 5 min left
    assert source.get() is first
    clock[0] = start + timedelta(minutes=56)  # inside the 5-minute margin
    second = source.get()
    assert fake_imds.state.issued == 2
    assert second.access_key_id != first.access_key_id
    assert second.session_token == "fake-session-token-2"


def test_source_serves_cached_credentials_while_imds_blips(fake_imds):
    start = datetime.now(UTC)
    clock = [start]
    fake_imds.state.credentials_lifetime = timedelta(hours=1)
    source = ImdsCredentialsSource(ImdsClient(fake_imds.url), now=lambda: clock[0])
    first = source.get()
    fake_imds.state.role = None  # IMDS answers, but without the role
    clock[0] = start + timedelta(minutes=57)
    assert source.get() is first  # refresh failed, cached still valid
    clock[0] = start + timedelta(minutes=61)  # cached now expired: the error surfaces
    with pytest.raises(ImdsNoRole):
        source.get()


def test_no_role_attached(fake_imds):
    fake_imds.state.role = None
    with ImdsClient(fake_imds.url) as client, pytest.raises(ImdsNoRole) as info:
        client.role_credentials()
    assert "instance profile" in info.value.hint


@pytest.mark.parametrize("status", [404, 405])
def test_v1_only_server_is_refused_without_fallback(fake_imds, status):
    fake_imds.state.mode = "v1"
    fake_imds.state.put_status = status
    with ImdsClient(fake_imds.url) as client, pytest.raises(ImdsV1Only) as info:
        client.role_credentials()
    assert str(status) in info.value.message
    assert "IMDSv1" in info.value.hint
    # It never asked the v1 server for anything without a token.
    assert [m for m, _, _ in fake_imds.state.requests] == ["PUT"]


def test_unreachable_server_fails_fast_with_a_hint(free_port):
    started = datetime.now(UTC)
    with ImdsClient(f"http://127.0.0.1:{free_port}", timeout=1.0) as client:
        with pytest.raises(ImdsUnreachable) as info:
            client.instance_id()
    assert (datetime.now(UTC) - started) < timedelta(seconds=5)
    assert info.value.retryable
    assert "EC2" in info.value.hint
    assert f"127.0.0.1:{free_port}" in info.value.message


def test_errors_never_echo_secrets(fake_imds):
    with ImdsClient(fake_imds.url) as client:
        creds, _ = client.role_credentials()
    assert "fake-secret" not in repr(creds)
    # A malformed credentials document: the error names the defect, not the body.
    fake_imds.state.credentials = lambda: {"AccessKeyId": "AKIA-LEAK", "SecretAccessKey": "s3cr3t-LEAK"}
    with ImdsClient(fake_imds.url) as client, pytest.raises(ImdsError) as info:
        client.role_credentials()
    assert "LEAK" not in str(info.value)
    assert "KeyError" in info.value.message


def test_proxy_environment_is_ignored(fake_imds, monkeypatch, free_port):
    # A proxy would see the credentials: IMDS traffic must go direct whatever the environment says.
    monkeypatch.setenv("HTTP_PROXY", f"http://127.0.0.1:{free_port}")
    monkeypatch.setenv("ALL_PROXY", f"http://127.0.0.1:{free_port}")
    with ImdsClient(fake_imds.url) as client:
        assert client.instance_id() == "i-0123456789abcdef0"


def test_server_error_is_not_mistaken_for_a_missing_role(fake_imds):
    fake_imds.state.role = "role-that-500s"

    original = fake_imds.server.RequestHandlerClass.do_GET

    def do_get(handler):
        if handler.path.endswith("/security-credentials/"):
            handler.state.requests.append(("GET", handler.path, dict(handler.headers)))
            handler._send(500)
            return
        original(handler)

    fake_imds.server.RequestHandlerClass.do_GET = do_get
    with ImdsClient(fake_imds.url) as client, pytest.raises(ImdsError) as info:
        client.role_name()
    assert not isinstance(info.value, ImdsNoRole)
    assert info.value.retryable and "500" in info.value.message


class RecordingProxy:
    """An HTTP proxy on loopback that only counts who came to it (and answers 502)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        self.connections = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            with conn:
                conn.recv(65536)
                conn.sendall(b"HTTP/1.1 502 Bad Gateway\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")


@pytest.fixture
def proxy_in_environment(monkeypatch):
    proxy = RecordingProxy()
    for name in ("HTTP_PROXY", "http_proxy", "HTTPS_PROXY", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    yield proxy
    proxy.sock.close()


def test_botocore_alone_would_send_imds_traffic_through_the_proxy(fake_imds, proxy_in_environment):
    """The control: botocore's fetcher as it comes takes the proxy from the environment (its env=
    argument does not change that), so the next test can tell a proxied client from a direct one."""
    fetcher = InstanceMetadataFetcher(timeout=1, num_attempts=1, base_url=fake_imds.url, env={})
    assert fetcher.retrieve_iam_role_credentials() == {}
    assert proxy_in_environment.connections >= 1
    assert fake_imds.state.requests == []


def test_credentials_never_pass_a_proxy_from_the_environment(fake_imds, proxy_in_environment):
    with ImdsClient(fake_imds.url) as client:
        creds, _ = client.role_credentials()
        assert client.instance_id() == "i-0123456789abcdef0"
    assert creds.secret_access_key == "fake-secret-1"
    assert proxy_in_environment.connections == 0
    assert [m for m, _, _ in fake_imds.state.requests] == ["PUT", "GET", "GET", "GET"]
