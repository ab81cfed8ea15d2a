"""SigV4 verification against requests signed by botocore itself (an implementation we did not write)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from botocore.auth import SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from nitro_llm.kms.errors import (
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from nitro_llm_dev.kms_emulator.principals import Principal, Principals
from nitro_llm_dev.kms_emulator.sigv4 import verify_request

ACCT = "123456789012"
USER = Principal("client", f"arn:aws:iam::{ACCT}:user/c", ACCT, "AKIAUSERUSERUSER0001", "s" * 40)
ROLE = Principal(
    "enclave_role",
    f"arn:aws:sts::{ACCT}:assumed-role/r/i-1",
    ACCT,
    "ASIAROLEROLEROLE0001",
    "t" * 40,
    session_token="token-" + "x" * 80,
    role_arn=f"arn:aws:iam::{ACCT}:role/r",
)
PRINCIPALS = Principals(ACCT, "us-east-1", [USER, ROLE])
BODY = b'{"KeyId": "alias/x"}'


def signed(
    principal: Principal = USER,
    *,
    body: bytes = BODY,
    region: str = "us-east-1",
    service: str = "kms",
    target: str = "TrentService.DescribeKey",
    secret: str | None = None,
    token: str | None = None,
    when: datetime | None = None,
    url: str = "http://127.0.0.1:4566/",
) -> tuple[dict[str, list[str]], str]:
    request = AWSRequest(
        method="POST",
        url=url,
        data=body,
        headers={"X-Amz-Target": target, "Content-Type": "application/x-amz-json-1.1"},
    )
    creds = Credentials(
        principal.access_key_id,
        secret or principal.secret_access_key,
        token if token is not None else principal.session_token,
    )
    SigV4Auth(creds, service, region).add_auth(request)
    headers: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        headers.setdefault(name.lower(), []).append(value if isinstance(value, str) else value.decode())
    headers["host"] = ["127.0.0.1:4566"]
    return headers, "/"


def verify(headers, target="/", body=BODY, now=None):
    return verify_request(
        method="POST", target=target, headers=headers, body=body, principals=PRINCIPALS, now=now
    )


def test_user_signature_verifies():
    headers, target = signed()
    assert verify(headers, target) is USER


def test_role_signature_with_session_token_verifies():
    headers, target = signed(ROLE)
    assert verify(headers, target) is ROLE


def test_body_tampering_is_detected():
    headers, target = signed()
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(headers, target, body=BODY.replace(b"x", b"y"))


def test_operation_swap_is_detected():
    headers, target = signed()
    headers["x-amz-target"] = ["TrentService.Decrypt"]
    with pytest.raises(InvalidSignature, match="does not match"):
        verify(headers, target)


def test_host_swap_is_detected():
    headers, target = signed()
    headers["host"] = ["kms.us-east-1.amazonaws.com"]
    with pytest.raises(InvalidSignature):
        verify(headers, target)


def test_wrong_secret():
    headers, target = signed(secret="w" * 40)
    with pytest.raises(InvalidSignature):
        verify(headers, target)


def test_unknown_access_key():
    stranger = Principal("x", "arn:aws:iam::1:user/x", "1", "AKIANOTKNOWN00000000", "s" * 40)
    headers, target = signed(stranger)
    with pytest.raises(UnrecognizedClient, match="security token"):
        verify(headers, target)


def test_role_credentials_without_token_are_refused():
    headers, target = signed(ROLE, token="")
    with pytest.raises(UnrecognizedClient):
        verify(headers, target)


def test_role_credentials_with_wrong_token_are_refused():
    headers, target = signed(ROLE, token="token-forged")
    with pytest.raises(UnrecognizedClient):
        verify(headers, target)


def test_user_credentials_with_a_token_are_refused():
    headers, target = signed(USER, token="anything")
    with pytest.raises(UnrecognizedClient):
        verify(headers, target)


def test_unsigned_token_is_refused():
    """Strip x-amz-security-token from SignedHeaders and re-sign by hand: still refused."""
    headers, target = signed(ROLE)
    auth = headers["authorization"][0].replace("x-amz-security-token;", "")
    headers["authorization"] = [auth]
    with pytest.raises(InvalidSignature):
        verify(headers, target)


@pytest.mark.parametrize("minutes", [16, 60 * 24])
def test_stale_signature_is_refused(minutes):
    headers, target = signed()
    with pytest.raises(InvalidSignature, match="Signature expired"):
        verify(headers, target, now=datetime.now(UTC) + timedelta(minutes=minutes))


def test_future_signature_is_refused():
    headers, target = signed()
    with pytest.raises(InvalidSignature, match="not yet current"):
        verify(headers, target, now=datetime.now(UTC) - timedelta(minutes=16))


def test_signature_within_skew_is_accepted():
    headers, target = signed()
    assert verify(headers, target, now=datetime.now(UTC) + timedelta(minutes=14)) is USER
    assert verify(headers, target, now=datetime.now(UTC) - timedelta(minutes=14)) is USER


def test_wrong_region_scope():
    headers, target = signed(region="eu-west-1")
    with pytest.raises(InvalidSignature, match="region"):
        verify(headers, target)


def test_wrong_service_scope():
    headers, target = signed(service="s3")
    with pytest.raises(InvalidSignature, match="service"):
        verify(headers, target)


def test_missing_authorization():
    headers, target = signed()
    del headers["authorization"]
    with pytest.raises(MissingAuthenticationToken):
        verify(headers, target)


@pytest.mark.parametrize(
    "value",
    [
        "AWS4-HMAC-SHA1 Credential=a/b/c/d/e, SignedHeaders=host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 SignedHeaders=host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/kms, SignedHeaders=host, Signature=" + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/kms/aws4_request, SignedHeaders=Host, Signature="
        + "0" * 64,
        "AWS4-HMAC-SHA256 Credential=AKIA/20240101/us-east-1/kms/aws4_request, SignedHeaders=host, Signature="
        + "z" * 64,
        "garbage",
    ],
)
def test_malformed_authorization(value):
    headers, target = signed()
    headers["authorization"] = [value]
    with pytest.raises(IncompleteSignature):
        verify(headers, target)


def test_scope_date_must_match_x_amz_date():
    headers, target = signed()
    auth = headers["authorization"][0]
    date = headers["x-amz-date"][0][:8]
    other = (datetime.strptime(date, "%Y%m%d") - timedelta(days=1)).strftime("%Y%m%d")
    headers["authorization"] = [auth.replace(f"/{date}/", f"/{other}/")]
    with pytest.raises(InvalidSignature, match="Date in Credential scope"):
        verify(headers, target)


def test_target_header_must_be_signed():
    """A client that signs only host and x-amz-date could have its operation rewritten in flight."""
    request = AWSRequest(method="POST", url="http://127.0.0.1:4566/", data=BODY, headers={})
    SigV4Auth(Credentials(USER.access_key_id, USER.secret_access_key), "kms", "us-east-1").add_auth(request)
    headers = {k.lower(): [v] for k, v in request.headers.items()}
    headers["host"] = ["127.0.0.1:4566"]
    headers["x-amz-target"] = ["TrentService.Decrypt"]  # added after signing
    with pytest.raises(InvalidSignature, match="x-amz-target"):
        verify(headers, "/")


def test_duplicate_authorization_headers_are_refused():
    headers, target = signed()
    headers["authorization"] = headers["authorization"] * 2
    with pytest.raises(IncompleteSignature):
        verify(headers, target)


def test_query_string_is_part_of_the_signature():
    headers, _ = signed(url="http://127.0.0.1:4566/?b=2&a=1")
    assert verify(headers, "/?b=2&a=1") is USER
    with pytest.raises(InvalidSignature):
        verify(headers, "/?a=1&b=3")
