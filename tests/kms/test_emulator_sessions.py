"""Session credentials that expire, and their rotation, in the emulator: what lets local tests show
the enclave renewing its role credentials (docs/CONTRACTS.md, "kms")."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError
from kms_testing import REGION

from nitro_llm.kms.client import make_kms_client
from nitro_llm_dev.kms_emulator import EmulatorConfig, EmulatorServer

LIFETIME = timedelta(minutes=5)


class Clock:
    """Real time plus an offset the test moves (SigV4 allows 15 minutes of skew; we stay inside)."""

    def __init__(self) -> None:
        self.offset = timedelta(0)

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset


@pytest.fixture
def emulator(tmp_path: Path) -> Any:
    clock = Clock()
    config = EmulatorConfig(state_dir=tmp_path / "kms", region=REGION, session_lifetime=LIFETIME, clock=clock)
    with EmulatorServer(config).start() as server:
        yield server, clock


def role(server: Any) -> dict[str, Any]:
    return json.loads((server.config.state_dir / "credentials.json").read_text())["enclave_role"]


def works(server: Any, creds: dict[str, Any]) -> bool:
    try:
        make_kms_client(server.url, creds, REGION).list_keys()
    except ClientError as exc:
        assert exc.response["Error"]["Code"] == "ExpiredTokenException"
        assert exc.response["ResponseMetadata"]["HTTPStatusCode"] == 400
        return False
    return True


def test_session_expires_and_the_next_one_is_published(emulator):
    server, clock = emulator
    first = role(server)
    expires = datetime.fromisoformat(first["expiration"])
    assert timedelta(0) < expires - clock() <= LIFETIME
    assert works(server, first)
    clock.offset = LIFETIME - timedelta(minutes=1)
    second = server.rotate_session_credentials()  # published before the first expires, as IMDS does
    assert role(server)["access_key_id"] == second.access_key_id != first["access_key_id"]
    assert works(server, first) and works(server, role(server))  # both valid in the overlap
    clock.offset = LIFETIME + timedelta(seconds=1)
    assert not works(server, first)
    assert works(server, role(server))


def test_users_keys_never_expire(emulator):
    server, clock = emulator
    clock.offset = timedelta(minutes=14)
    creds = json.loads((server.config.state_dir / "credentials.json").read_text())["client"]
    assert "expiration" not in creds and works(server, creds)


def test_without_a_lifetime_sessions_do_not_expire(tmp_path):
    config = EmulatorConfig(state_dir=tmp_path / "kms", region=REGION)
    with EmulatorServer(config).start() as server:
        assert "expiration" not in role(server)
