"""Hypothesis against the parsers facing untrusted bytes that the other suites do not fuzz yet.

Already fuzzed elsewhere (not repeated here): frames and the kms envelope (tests/protocol), the
attested envelope, descriptor, bundle and padding (tests/attested), attestation documents
(tests/attestation), CMS blobs and key policies (tests/kms), the seed format (tests/enclave).
Here: the KMS emulator's HTTP front (raw bytes, then properly signed requests with random
parameters), its SigV4 parser, the gateway's whole HTTP surface, the frame readers' field checks,
the API tokens file, and what the client makes of a hostile gateway's error answers.
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nitro_llm.client.wire import frame_error, response_error
from nitro_llm.errors import ConfigError, NitroLLMError
from nitro_llm.gateway.admission import AccessSettings
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.auth import bearer_token, parse_tokens
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.kms.errors import KmsApiError
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.errors import FrameError
from nitro_llm_dev.kms_emulator import EmulatorConfig, EmulatorServer
from nitro_llm_dev.kms_emulator.operations import OPERATIONS
from nitro_llm_dev.kms_emulator.sigv4 import verify_request
from nitro_llm_dev.nsm.devca import DevCA

FUZZ = settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
REGION = "us-east-1"

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=30),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=12), inner, max_size=4),
    max_leaves=15,
)
PARAM_NAMES = [
    "KeyId",
    "CiphertextBlob",
    "Plaintext",
    "EncryptionContext",
    "KeySpec",
    "NumberOfBytes",
    "Recipient",
    "Policy",
    "PolicyName",
    "AliasName",
    "TargetKeyId",
    "Limit",
    "Marker",
    "GrantTokens",
    "DryRun",
    "Description",
    "KeyUsage",
    "PendingWindowInDays",
    "BypassPolicyLockoutSafetyCheck",
    "EncryptionAlgorithm",
]


@pytest.fixture(scope="module")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Any:
    root = tmp_path_factory.mktemp("kms-fuzz")
    ca = DevCA.load_or_create(root / "dev-ca")
    with EmulatorServer(
        EmulatorConfig(state_dir=root / "kms", region=REGION, trust_roots=[ca.root_certificate])
    ).start() as server:
        creds = json.loads((server.config.state_dir / "credentials.json").read_text())
        yield server, creds


def signed_post(url: str, who: dict[str, Any], operation: str, body: bytes) -> httpx.Response:
    """A request signed exactly as boto3 signs, with any body: the emulator must judge the content."""
    request = AWSRequest(
        method="POST",
        url=url + "/",
        data=body,
        headers={"X-Amz-Target": f"TrentService.{operation}", "Content-Type": "application/x-amz-json-1.1"},
    )
    creds = Credentials(who["access_key_id"], who["secret_access_key"], who.get("session_token"))
    SigV4Auth(creds, "kms", REGION).add_auth(request)
    return httpx.post(url + "/", content=body, headers=dict(request.headers.items()), timeout=30)


def _alive(emulator: Any) -> None:
    server, creds = emulator
    r = signed_post(server.url, creds["client"], "GenerateRandom", b'{"NumberOfBytes": 8}')
    assert r.status_code == 200 and len(r.json()["Plaintext"]) > 0


@FUZZ
@given(st.binary(min_size=1, max_size=600))
def test_kms_emulator_survives_raw_bytes(emulator, data):
    server, _ = emulator
    with socket.create_connection(("127.0.0.1", server.port), timeout=10) as sock:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)
        answer = b""
        try:
            while chunk := sock.recv(65536):
                answer += chunk
        except OSError:
            pass
    # An HTTP/1.x answer, nothing, or (for a request line too broken to tell the version) the
    # standard library's HTTP/0.9-style error page: never an internal failure.
    assert answer == b"" or answer.startswith((b"HTTP/1.", b"<!DOCTYPE HTML>")), answer[:60]
    assert b" 500 " not in answer.split(b"\r\n", 1)[0] and b"InternalFailure" not in answer


@FUZZ
@given(
    st.sampled_from(sorted(OPERATIONS)),
    st.dictionaries(st.sampled_from(PARAM_NAMES), json_values, max_size=5),
    st.sampled_from(["client", "admin", "enclave_role"]),
)
def test_kms_emulator_signed_requests_with_random_parameters(emulator, operation, params, who):
    """Signed by a real principal, so the parameters reach the operations; only AWS-shaped client
    errors may come back, never an internal failure."""
    server, creds = emulator
    r = signed_post(server.url, creds[who], operation, json.dumps(params).encode())
    assert r.status_code != 500, (operation, r.text[:200])
    if r.status_code != 200:
        assert r.json()["__type"].endswith("Exception"), r.text[:200]


@FUZZ
@given(st.binary(max_size=300).map(lambda b: b.decode("latin-1")), st.sampled_from(sorted(OPERATIONS)))
def test_kms_emulator_signed_requests_with_random_bodies(emulator, text, operation):
    server, creds = emulator
    r = signed_post(server.url, creds["client"], operation, text.encode("latin-1"))
    assert r.status_code in (200, 400, 403, 404), (operation, r.status_code, r.text[:200])


def test_kms_emulator_still_serves_after_the_fuzzing(emulator):
    _alive(emulator)


header_values = st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=200)


@FUZZ
@given(
    st.dictionaries(
        st.sampled_from(["authorization", "x-amz-date", "x-amz-security-token", "host", "x-amz-target"]),
        st.lists(header_values, min_size=1, max_size=2),
        max_size=5,
    ),
    st.binary(max_size=100),
)
def test_sigv4_verifier_only_raises_aws_faults(emulator, headers, body):
    server, creds = emulator
    if headers.get("authorization"):
        key = creds["client"]["access_key_id"]
        headers["authorization"][0] = (
            f"AWS4-HMAC-SHA256 Credential={key}/20250101/{REGION}/kms/aws4_request, "
            f"SignedHeaders=host;x-amz-date, Signature={headers['authorization'][0]}"
        )
    with pytest.raises(KmsApiError):
        verify_request(
            method="POST",
            target="/",
            headers=headers,
            body=body,
            principals=server.principals,
            now=datetime.now(UTC),
        )


# -- the gateway's HTTP surface ----------------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_client(tmp_path_factory: pytest.TempPathFactory) -> TestClient:
    root = tmp_path_factory.mktemp("gateway-fuzz")
    nobody = root / "no-enclave.sock"  # refused connections: the gateway must still answer typed
    app = create_app(
        GatewaySettings(enclave=f"unix:{nobody}", connect_timeout=0.5, max_body_bytes=4096),
        access=AccessSettings(),
    )
    return TestClient(app, raise_server_exceptions=False)


paths = st.sampled_from(
    ["/v1/infer", "/v1/attestation", "/healthz", "/v1/enclave/stats", "/metrics", "/", "/v1", "/v1/infer/x"]
) | st.text(st.characters(min_codepoint=33, max_codepoint=126, exclude_characters="?#"), max_size=30).map(
    # one leading slash: "//host:port" would be read by the test client as an authority, not a path
    lambda p: "/" + p.lstrip("/")
)


@FUZZ
@given(
    st.sampled_from(["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "HEAD"]),
    paths,
    st.dictionaries(st.sampled_from(["nonce", "suite", "x"]), st.text(max_size=40), max_size=3),
    st.dictionaries(
        st.sampled_from(["content-type", "authorization", "content-length", "accept", "x-forwarded-for"]),
        header_values,
        max_size=3,
    ),
    st.binary(max_size=5000),
)
def test_gateway_answers_anything_with_a_typed_status(gateway_client, method, path, query, headers, body):
    if "content-length" in headers:
        headers.pop("content-length")  # the test client computes it; lying lengths are tested on a socket
    r = gateway_client.request(method, path, params=query, headers=headers, content=body if body else None)
    assert r.status_code < 500 or r.status_code in (503, 504), (method, path, r.status_code, r.text[:200])
    is_json = r.headers.get("content-type", "").startswith("application/json")
    if r.status_code >= 400 and is_json and method != "HEAD" and path != "/healthz":
        data = r.json()
        assert isinstance(data, dict) and ("code" in data or "detail" in data)


# -- small parsers -----------------------------------------------------------------------------

frame_maps = st.dictionaries(
    st.sampled_from(
        ["t", "envelope", "access_key_id", "secret_access_key", "session_token", "expiration", "x"]
    ),
    json_values | st.binary(max_size=40),
    max_size=6,
)


@FUZZ
@given(frame_maps, st.sampled_from(["infer", "credentials", "ping", "error"]))
def test_frame_readers_raise_only_frame_errors(frame, kind):
    frame = {**frame, "t": kind}
    reader = {
        "infer": frame_kinds.read_infer,
        "credentials": frame_kinds.read_credentials,
        "ping": frame_kinds.read_ping,
        "error": frame_kinds.read_error,
    }[kind]
    try:
        reader(frame)
    except FrameError:
        pass


@FUZZ
@given(json_values)
def test_tokens_file_parser_raises_only_config_errors(data):
    try:
        parse_tokens(data)
    except ConfigError:
        pass


@FUZZ
@given(st.text(max_size=400))
def test_bearer_header_parser_never_raises(value):
    token = bearer_token(value)
    assert token is None or (0 < len(token) <= 256 and " " not in token)


@FUZZ
@given(json_values.map(lambda v: json.dumps(v).encode()) | st.binary(max_size=200), st.integers(400, 599))
def test_client_reads_any_gateway_error_answer_as_a_typed_error(content, status):
    error = response_error(httpx.Response(status, content=content))
    assert isinstance(error, NitroLLMError) and isinstance(error.code, str)


@FUZZ
@given(frame_maps)
def test_client_reads_any_error_frame_as_a_typed_error(frame):
    error = frame_error({**frame, "t": "error"})
    assert isinstance(error, NitroLLMError) and isinstance(error.code, str)


def test_tokens_fuzz_inputs_include_a_valid_file(tmp_path: Path):
    """The parser under fuzz really accepts what it should (so 'only ConfigError' is not vacuous)."""
    from nitro_llm.gateway.auth import add_client

    add_client(tmp_path / "t.json", "ok-client")
    assert len(parse_tokens(json.loads((tmp_path / "t.json").read_text()))) == 1


def test_a_hostile_gateway_cannot_drive_the_terminal_or_flood_the_client():
    nasty = {
        "code": "x\x1b[2J",
        "message": "\x1b]8;;https://evil.example\x07click\x1b]8;;\x07" + "A" * 10_000,
    }
    error = response_error(httpx.Response(500, content=json.dumps(nasty).encode()))
    assert "\x1b" not in error.code + error.message and len(error.message) <= 500
    endless = httpx.Response(500, content=iter([b"x" * 65536] * 10_000))  # 640 MiB if read whole
    assert response_error(endless).code == "http_500"
    framed = frame_error({"t": "error", "code": "c", "message": "\x07" * 3, "hint": "\x1b[31m"})
    assert "\x07" not in framed.message and "\x1b" not in framed.hint
