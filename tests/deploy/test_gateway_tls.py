"""The gateway over HTTPS with a self-signed certificate, as deploy/README.md sets it up: clients
that pin the certificate ('ca_file' in client.json) reach it, with their API token; clients that do
not, or that pin another certificate, are refused by TLS before any token is sent. Plain HTTP is
refused off loopback before anything listens.

Real processes on 127.0.0.1: the gateway, and the stand-in enclave answering its link.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import standins
from typer.testing import CliRunner

from nitro_llm.cli.main import full_app
from nitro_llm.client.config import ClientConfig
from nitro_llm.deploy import tls_cert
from nitro_llm.gateway.auth import add_client
from nitro_llm.proxy.confidential_backends import KmsBackend

REPO = Path(__file__).resolve().parents[2]
NOW = dt.datetime.now(dt.UTC)


def _pair(directory: Path, name: str) -> tuple[Path, Path]:
    cert_pem, key_pem = tls_cert.self_signed([], now=NOW)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{name}.crt").write_bytes(cert_pem)
    (directory / f"{name}.key").write_bytes(key_pem)
    return directory / f"{name}.crt", directory / f"{name}.key"


@pytest.fixture(scope="module")
def gateway_process(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict]:
    """One gateway for the module (each start costs seconds); each test gets its own client.json."""
    tmp_path = tmp_path_factory.mktemp("https-gateway")
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        free_port = probe.getsockname()[1]
    bin_dir = standins.install(tmp_path / "bin", ["nitro-llm-enclave-standin"])
    sock = tmp_path / "enclave.sock"
    enclave = subprocess.Popen(
        [str(bin_dir / "nitro-llm-enclave-standin"), "--socket", str(sock), "--pcrs", json.dumps({}),
         "--devca", str(tmp_path / "devca")],
        stdout=subprocess.DEVNULL,
    )  # fmt: skip
    cert, key = _pair(tmp_path / "tls", "gateway")
    tokens = tmp_path / "tokens.json"
    token = add_client(tokens, "alice")
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'dev'}"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "nitro_llm.cli.main", "gateway", "--enclave", f"unix:{sock}",
         "--host", "127.0.0.1", "--port", str(free_port), "--api-tokens-file", str(tokens),
         "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"https://127.0.0.1:{free_port}"
    client = tmp_path / "client.json"
    client.write_text(
        json.dumps(
            {"gateway_url": url, "ca_file": "tls/gateway.crt", "key_id": "alias/nitro-llm",
             "region": "eu-west-1", "api_token": token}
        )
    )  # fmt: skip
    config = ClientConfig.load(client)
    pause = threading.Event()
    for _ in range(300):  # bounded: the gateway is up when its /healthz says the enclave answers
        try:
            with config.gateway_http() as http:
                if http.get(f"{url}/healthz").status_code == 200:
                    break
        except httpx.HTTPError:
            pass
        pause.wait(0.05)
    else:
        pytest.fail("the HTTPS gateway never became healthy")
    yield {"url": url, "client": client, "token": token, "tmp": tmp_path}
    for proc in (gateway, enclave):
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)
            raise


pytestmark = pytest.mark.slow


@pytest.fixture
def https_gateway(gateway_process: dict, tmp_path: Path) -> dict:
    client = tmp_path / "client.json"
    data = json.loads(gateway_process["client"].read_text())
    data["ca_file"] = str(gateway_process["tmp"] / "tls" / "gateway.crt")
    client.write_text(json.dumps(data))
    return {**gateway_process, "client": client, "tmp": tmp_path}


def test_attest_fetch_over_https_with_the_pinned_certificate(https_gateway):
    out = https_gateway["tmp"] / "document.cbor"
    nonce = "ab" * 32
    result = CliRunner().invoke(
        full_app(), ["attest", "fetch", "--config", str(https_gateway["client"]), "--nonce", nonce,
                     "--out", str(out)],
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    assert bytes.fromhex(nonce) in out.read_bytes()  # the enclave's document carries our nonce


def test_the_proxy_reaches_the_gateway_over_https(https_gateway):
    backend = KmsBackend(ClientConfig.load(https_gateway["client"]))
    try:
        assert backend.probe() is None  # /healthz over TLS, verified against the pinned certificate
    finally:
        backend.close()


@pytest.mark.parametrize("trust", ["system", "another certificate"])
def test_a_client_that_does_not_pin_the_certificate_is_refused_by_tls(https_gateway, trust):
    data = json.loads(https_gateway["client"].read_text())
    if trust == "system":
        del data["ca_file"]
    else:
        data["ca_file"] = str(_pair(https_gateway["tmp"] / "other", "impostor")[0])
    https_gateway["client"].write_text(json.dumps(data))
    config = ClientConfig.load(https_gateway["client"])
    with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"), config.gateway_http() as http:
        http.get(f"{https_gateway['url']}/healthz")
    backend = KmsBackend(config)
    try:
        assert "ConnectError" in (backend.probe() or "")
    finally:
        backend.close()


def test_without_the_token_the_https_gateway_answers_401(https_gateway):
    config = ClientConfig.load(https_gateway["client"])
    nonce = "cd" * 32
    with config.gateway_http() as http:
        assert http.get(f"{https_gateway['url']}/v1/attestation?nonce={nonce}").status_code == 200
        del http.headers["authorization"]
        assert http.get(f"{https_gateway['url']}/v1/attestation?nonce={nonce}").status_code == 401


@pytest.mark.parametrize("host", ["0.0.0.0", "192.0.2.1", "::"])
def test_plain_http_is_refused_off_loopback(host, tmp_path):
    tokens = tmp_path / "tokens.json"
    add_client(tokens, "alice")
    args = ["gateway", "--enclave", "unix:/nonexistent", "--host", host, "--allow-remote",
            "--api-tokens-file", str(tokens)]  # fmt: skip
    result = CliRunner().invoke(full_app(), args)
    assert result.exit_code == 2
    assert "plain HTTP is allowed only on loopback" in result.output


def test_a_key_that_is_not_the_certificates_is_refused_at_start(tmp_path):
    cert, _ = _pair(tmp_path, "a")
    _, other_key = _pair(tmp_path, "b")
    args = ["gateway", "--enclave", "unix:/nonexistent", "--tls-cert", str(cert), "--tls-key", str(other_key)]
    result = CliRunner().invoke(full_app(), args)
    assert result.exit_code == 2 and "cannot use --tls-cert" in result.output
    assert "PRIVATE KEY" not in result.output  # the key's bytes are never echoed
