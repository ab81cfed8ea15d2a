"""The push schedule of the role's credentials against IMDS's rotation, on a fake clock: one failed
IMDS fetch inside the refresh margin never leaves the enclave holding expired credentials."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from nitro_llm.gateway.credential_push import CredentialsPusher
from nitro_llm.gateway.credential_timing import REFRESH_MARGIN
from nitro_llm.gateway.credentials import RoleCredentials
from nitro_llm.gateway.imds import ImdsCredentialsSource, ImdsUnreachable, parse_expiration
from nitro_llm.gateway.settings import GatewaySettings

LIFETIME = timedelta(hours=1)
HORIZON = timedelta(hours=4)  # four rotations, each with a failed fetch


class Clock:
    def __init__(self) -> None:
        self.now = datetime(2026, 3, 1, 12, 0, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now


class RotatingImds:
    """IMDS for one role, at its published minimum: each set lives LIFETIME and the next appears
    REFRESH_MARGIN before it expires. The first fetch after each rotation fails (a hiccup)."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        issued = clock.now - timedelta(minutes=23, seconds=43)  # the gateway starts mid-session
        self.sets = [(issued, issued + LIFETIME)]  # (issued, expires)
        self.hiccups = 0
        self._failed: set[int] = set()

    def role_credentials(self, role: str | None = None) -> tuple[RoleCredentials, datetime]:
        while self.clock.now >= self.sets[-1][1] - REFRESH_MARGIN:
            issued = self.sets[-1][1] - REFRESH_MARGIN
            self.sets.append((issued, issued + LIFETIME))
        index = len(self.sets) - 1
        if index > 0 and index not in self._failed:
            self._failed.add(index)
            self.hiccups += 1
            raise ImdsUnreachable("the metadata service did not answer")
        expires = self.sets[index][1]
        creds = RoleCredentials(
            f"ASIA{index:016d}", "secret", "token", expires.strftime("%Y-%m-%dT%H:%M:%SZ")
        )
        return creds, expires


class RecordingLink:
    """The enclave's side of the hand-off: what it holds, and since when."""

    def __init__(self, clock: Clock) -> None:
        self.clock = clock
        self.handoffs: list[tuple[datetime, datetime]] = []  # (when, expiry of what was handed)

    async def call(self, frame: dict, timeout: float = 10.0) -> dict:
        assert frame["t"] == "credentials"
        self.handoffs.append((self.clock.now, parse_expiration(frame["expiration"])))
        return {"t": "ok"}

    def infer(self, envelope: bytes):  # pragma: no cover - not used by the pusher
        raise NotImplementedError


class _Horizon(Exception):
    pass


def run_schedule(period: float) -> tuple[RecordingLink, RotatingImds]:
    clock = Clock()
    imds = RotatingImds(clock)
    link = RecordingLink(clock)
    source = ImdsCredentialsSource(imds, now=clock)  # type: ignore[arg-type]
    end = clock.now + HORIZON

    async def sleep(seconds: float) -> None:
        clock.now += timedelta(seconds=seconds)
        if clock.now > end:
            raise _Horizon

    pusher = CredentialsPusher(link, source, period=period, sleep=sleep)
    with pytest.raises(_Horizon):
        asyncio.run(pusher.run())
    return link, imds


def shortest_lead(link: RecordingLink) -> timedelta:
    """How long before their expiry the enclave's credentials were replaced, at the closest."""
    pairs = zip(link.handoffs, link.handoffs[1:], strict=False)
    return min(expires - replaced_at for (_, expires), (replaced_at, _) in pairs)


def test_one_failed_fetch_in_the_margin_never_leaves_expired_credentials():
    link, imds = run_schedule(GatewaySettings().credentials_refresh_seconds)
    assert imds.hiccups == 4  # every rotation began with a failed fetch
    lead = shortest_lead(link)
    # Replaced at least a period after the failed fetch and still minutes before expiry.
    assert lead >= REFRESH_MARGIN - 2 * timedelta(seconds=GatewaySettings().credentials_refresh_seconds)
    assert lead > timedelta(0)


def test_a_push_period_as_long_as_the_margin_is_refused():
    with pytest.raises(ValidationError):
        GatewaySettings(credentials_refresh_seconds=REFRESH_MARGIN.total_seconds())
    assert GatewaySettings().credentials_refresh_seconds <= REFRESH_MARGIN.total_seconds() / 4


def test_refresh_skips_the_cache():
    clock = Clock()
    imds = RotatingImds(clock)
    source = ImdsCredentialsSource(imds, now=clock)  # type: ignore[arg-type]
    first = source.get()
    assert source.get() is first  # cached while outside the margin
    imds.sets.append((clock.now, clock.now + LIFETIME))  # a new session, say after a revocation
    imds._failed.add(1)
    assert source.refresh().access_key_id == "ASIA0000000000000001"
    assert source.get().access_key_id == "ASIA0000000000000001"
