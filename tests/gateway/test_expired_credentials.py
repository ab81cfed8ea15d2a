"""An expired session token: the enclave asks for fresh credentials, the gateway hands them over and
resends the request exactly once.

Real pieces on loopback: the KMS emulator, whose clock the test moves and whose role session
expires (``session_lifetime``; ``rotate_session_credentials`` publishes the next one in
credentials.json, as IMDS does), the enclave server with the product's key release, and the gateway
app with its credentials pusher reading that file, called through the product's client.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from kms_stack import ALIAS, REGION, start_kms_path

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.credentials import FileCredentialsSource
from nitro_llm.gateway.settings import GatewaySettings

LIFETIME = timedelta(minutes=5)
PAST_EXPIRY = timedelta(minutes=6)  # less than SigV4's 15 minutes of allowed skew: only the token expires


class MovableUtcClock:
    """The emulator's now: real UTC time plus whatever the test has advanced it by."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, by: timedelta) -> None:
        self.offset += by


@pytest.fixture
def stack(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="nitro_llm_dev.kms_emulator")
    clock = MovableUtcClock()
    path = start_kms_path(tmp_path, session_lifetime=LIFETIME, kms_clock=clock)
    app = create_app(
        GatewaySettings(enclave=path.address), credentials=FileCredentialsSource(path.enclave_role_file)
    )
    with TestClient(app) as http:
        assert app.state.credentials_pusher.handed_off.wait(30)  # the enclave holds the current session
        client_creds = {k: v for k, v in path.credentials()["client"].items() if k != "arn"}
        config = ClientConfig(
            gateway_url=str(http.base_url),
            key_id=ALIAS,
            region=REGION,
            kms_endpoint=path.emulator.url,
            credentials=client_creds,
        )
        yield path, clock, app, KmsConversation(config, http=http)
    path.close()


def _decrypt_outcomes(caplog) -> list[str]:
    """The emulator's own log: one line per request, "op=... outcome=..." (no content)."""
    records = [
        r
        for r in caplog.records
        if r.name == "nitro_llm_dev.kms_emulator" and r.msg.startswith("request op=")
    ]
    return [str(r.args[3]) for r in records if r.args[0] == "Decrypt"]


def test_expired_token_gets_fresh_credentials_and_exactly_one_retry(stack, caplog):
    path, clock, app, conversation = stack
    clock.advance(PAST_EXPIRY)  # the session the enclave holds has expired...
    path.emulator.rotate_session_credentials()  # ...and the next one is published
    answer = conversation.ask([{"role": "user", "content": "is my appointment still on?"}])
    assert answer == "is my appointment still on?"
    assert _decrypt_outcomes(caplog) == ["ExpiredTokenException", "ok"]
    assert path.server.stats()["requests"] == 2  # the gateway resent the request once
    assert path.key_release.kms_attempts == 2  # one Decrypt each: the expiry was not retried blindly
    assert app.state.credentials_pusher.fresh_fetches == 1


def test_still_expired_after_the_refresh_is_reported_after_one_retry(stack, caplog):
    path, clock, app, conversation = stack
    clock.advance(PAST_EXPIRY)  # expired, and nothing new published: the fresh fetch finds the same
    with pytest.raises(Exception) as err:
        conversation.ask([{"role": "user", "content": "hello"}])
    assert getattr(err.value, "code", None) == "credentials_expired"
    assert getattr(err.value, "retryable", None) is True
    assert _decrypt_outcomes(caplog) == ["ExpiredTokenException", "ExpiredTokenException"]
    assert path.server.stats()["requests"] == 2  # one resend, never a loop
    assert app.state.credentials_pusher.fresh_fetches == 1
