"""Freshness against a drifting enclave clock: judged by the NSM's time carried forward by the
monotonic clock (enclave/trusted_clock.py), on injected clocks.

The scenario: the enclave runs for four weeks; its own oscillator runs 200 ppm fast (twenty times
the seconds a week reported on Nitro), so by then its wall clock is about 8 minutes ahead. The NSM's
documents carry the true time (the hypervisor's). Clients have honest clocks, or clocks a little
off, or far off.
"""

from __future__ import annotations

import datetime as dt

import pytest

from nitro_llm.attestation.errors import NsmError
from nitro_llm.enclave.errors import StaleRequestError
from nitro_llm.enclave.freshness import FreshnessGuard
from nitro_llm.enclave.trusted_clock import REANCHOR_SECONDS, TrustedClock
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

PPM = 200e-6
WEEK = 7 * 24 * 3600.0
START = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
WINDOW_MS = 120_000


class World:
    """True time, and the enclave's drifting view of it (its monotonic and wall clocks)."""

    def __init__(self) -> None:
        self.elapsed = 0.0  # true seconds since START

    def true_ms(self) -> int:
        return int(START.timestamp() * 1000 + self.elapsed * 1000)

    def nsm_time(self) -> dt.datetime:
        return START + dt.timedelta(seconds=self.elapsed)

    def monotonic(self) -> float:
        return 5000.0 + self.elapsed * (1 + PPM)

    def enclave_wall_ms(self) -> int:
        return self.true_ms() + int(self.elapsed * PPM * 1000)


class FailingNsm:
    """Answers the first ``good`` attestations, then fails as a wedged NSM would."""

    def __init__(self, nsm, good: int) -> None:
        self._nsm, self._good, self.calls = nsm, good, 0

    def attest(self, user_data=None, nonce=None, public_key=None) -> bytes:
        self.calls += 1
        if self.calls > self._good:
            raise NsmError("the NSM did not answer")
        return self._nsm.attest()


@pytest.fixture
def world_and_nsm(tmp_path):
    world = World()
    nsm = open_emulated_nsm(
        ca=DevCA.load_or_create(tmp_path / "dev-ca"), pcrs={0: b"\x01" * 48}, clock=world.nsm_time
    )
    yield world, nsm
    nsm.close()


def _run_weeks(world: World, clock: TrustedClock, weeks: float, step: float = 3600.0) -> int:
    """Advance true time hour by hour, reading the clock as requests would; the worst error in ms."""
    worst = 0
    while world.elapsed < weeks * WEEK:
        world.elapsed += step
        worst = max(worst, abs(clock.now_ms() - world.true_ms()))
    return worst


def test_nsm_anchored_clock_keeps_time_while_the_enclave_clock_drifts(world_and_nsm):
    world, nsm = world_and_nsm
    clock = TrustedClock(nsm, monotonic=world.monotonic, wall_ms=world.enclave_wall_ms)
    worst = _run_weeks(world, clock, 4)  # a read an hour: each one re-anchors
    assert clock.anchors == 4 * WEEK / 3600 + 1
    before = clock.anchors
    worst = max(worst, _run_weeks(world, clock, 4 + 1800 / WEEK, step=60.0))  # reads between anchors
    assert clock.anchors == before + 3  # one per REANCHOR_SECONDS of (drifting) monotonic time
    assert world.enclave_wall_ms() - world.true_ms() > 480_000  # the enclave's own clock: 8 min ahead
    assert worst <= PPM * REANCHOR_SECONDS * 1000 + 2  # at most the drift of one re-anchor interval


@pytest.mark.parametrize("client_offset_s", [0, -100, 100])
def test_clients_within_the_window_pass_after_weeks_of_drift(world_and_nsm, client_offset_s):
    world, nsm = world_and_nsm
    clock = TrustedClock(nsm, monotonic=world.monotonic)
    guard = FreshnessGuard(clock_ms=clock.now_ms)
    _run_weeks(world, clock, 4, step=6 * 3600.0)
    guard.check_fresh("a" * 32, world.true_ms() + client_offset_s * 1000)


@pytest.mark.parametrize("client_offset_s", [-600, 600, 125])
def test_clients_far_off_are_stale(world_and_nsm, client_offset_s):
    world, nsm = world_and_nsm
    clock = TrustedClock(nsm, monotonic=world.monotonic)
    guard = FreshnessGuard(clock_ms=clock.now_ms)
    _run_weeks(world, clock, 4, step=6 * 3600.0)
    with pytest.raises(StaleRequestError):
        guard.check_fresh("a" * 32, world.true_ms() + client_offset_s * 1000)


def test_the_drifting_wall_clock_would_refuse_an_honest_client(world_and_nsm):
    """What the NSM anchor is for: the enclave's own clock refuses a client with the true time."""
    world, _ = world_and_nsm
    guard = FreshnessGuard(clock_ms=world.enclave_wall_ms)
    world.elapsed = 4 * WEEK
    with pytest.raises(StaleRequestError):
        guard.check_fresh("a" * 32, world.true_ms())


def test_a_failed_reanchor_carries_the_last_anchor_forward(world_and_nsm, caplog):
    world, nsm = world_and_nsm
    flaky = FailingNsm(nsm, good=1)
    clock = TrustedClock(flaky, monotonic=world.monotonic)
    world.elapsed = 3600.0
    error_ms = clock.now_ms() - world.true_ms()  # carried forward on the monotonic clock alone
    assert abs(error_ms - 3600 * PPM * 1000) <= 2
    assert clock.anchors == 1 and flaky.calls == 2 and "re-anchor failed" in caplog.text
    clock.now_ms()  # not retried on every read: once per interval
    assert flaky.calls == 2


def test_an_nsm_that_cannot_attest_at_start_is_fatal(world_and_nsm):
    _, nsm = world_and_nsm
    with pytest.raises(NsmError):
        TrustedClock(FailingNsm(nsm, good=0))
