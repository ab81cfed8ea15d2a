"""The seed's request format: parsed strictly, errors name fields never values."""

from __future__ import annotations

import base64
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.seed_compat import SeedRequestError, parse_seed_request

GOOD = {
    "access_key_id": "AKIAEXAMPLE",
    "secret_access_key": "s3cr3t-value",
    "token": "session-token",
    "region": "us-east-1",
    "ciphertext": base64.b64encode(b"blob").decode(),
}


def body(**changes):
    data = {**GOOD, **changes}
    return json.dumps({k: v for k, v in data.items() if v is not ...}).encode()


def test_parses_the_seed_shape():
    request = parse_seed_request(body())
    assert request.ciphertext == b"blob"
    assert request.credentials.session_token == "session-token"
    assert "s3cr3t" not in repr(request)


def test_empty_token_means_long_term_keys():
    assert parse_seed_request(body(token="")).credentials.session_token is None


@pytest.mark.parametrize(
    "raw",
    [
        b"not json",
        b"[]",
        body(ciphertext="***"),
        body(region=""),
        body(access_key_id=5),
        body(extra="x"),
        body(token=...),
        b"x" * (65 * 1024),
    ],
)
def test_malformed_refused_without_echoing_secrets(raw):
    with pytest.raises(SeedRequestError) as info:
        parse_seed_request(raw)
    assert "s3cr3t" not in str(info.value)


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=512))
def test_fuzz_only_typed_errors(data):
    try:
        parse_seed_request(data)
    except SeedRequestError:
        pass


def test_enabling_the_seed_format_is_measured():
    assert "seed_compat" not in EnclaveConfig().measured()
    assert EnclaveConfig(seed_compat=True).measured()["seed_compat"] is True


def test_enclave_without_seed_compat_refuses_seed_frames(enclave):
    replies = enclave.call({"t": "seed", "body": body()})
    assert replies[-1]["t"] == "error" and replies[-1]["code"] == "seed_route_disabled"
    assert "s3cr3t" not in str(replies)
