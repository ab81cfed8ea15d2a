"""Keep the production enclave running: restart it when it is gone or wedged, with backoff.

Nitro has no restart policy of its own: an enclave that panics, runs out of memory or is terminated
stays gone, and the gateway can only answer 503. The supervisor looks at two things each
``interval``: whether nitro-cli still lists the enclave (``describe-enclaves``), and whether the
gateway reaches it (``/healthz``). It acts on what it sees:

- not listed: start it (the EIF is checked against the manifest first, every time);
- listed in debug mode: terminate it and start it in production mode; a production host never runs
  an enclave with a console (all-zero PCRs, KMS would refuse it anyway);
- listed, but /healthz has said "enclave not ok" for ``unhealthy_after`` seconds after its
  ``boot_grace``: it is wedged; terminate it and start it again;
- the gateway itself unreachable: nothing can be judged; wait (systemd restarts the gateway).

Restarts back off (``backoff_initial`` doubling up to ``backoff_max``) until the enclave has stayed
healthy for ``healthy_reset``, so a crash loop costs little and says so in the log. Every state
change is one log line. All effects go through :class:`EnclaveControl`, and time through an
injected clock, so the decisions are tested without nitro-cli or sleeping.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from nitro_llm.deploy.config import SupervisorSection
from nitro_llm.errors import NitroLLMError

log = logging.getLogger("nitro_llm.deploy.supervisor")


@dataclass(frozen=True)
class Listing:
    """What nitro-cli says about the enclave of our name."""

    running: bool
    debug_mode: bool = False
    enclave_id: str = ""


HEALTHY, ENCLAVE_UNHEALTHY, GATEWAY_UNREACHABLE = "healthy", "enclave-unhealthy", "gateway-unreachable"


@dataclass(frozen=True)
class Health:
    status: str  # HEALTHY | ENCLAVE_UNHEALTHY | GATEWAY_UNREACHABLE
    detail: str = ""


class EnclaveControl(Protocol):
    def describe(self) -> Listing: ...
    def start(self) -> str:
        """Verify the EIF and run it in production mode; return the new enclave's id."""
        ...

    def terminate(self) -> None: ...
    def health(self) -> Health: ...


class Supervisor:
    def __init__(
        self, control: EnclaveControl, policy: SupervisorSection, *, clock: Callable[[], float]
    ) -> None:
        self._control = control
        self._policy = policy
        self._clock = clock
        self.state = "unknown"
        self.failures = 0  # restarts since the enclave was last healthy for healthy_reset
        self.starts = 0
        self._next_start = clock()  # the first start is not delayed
        self._started_at: float | None = None
        self._unhealthy_since: float | None = None
        self._healthy_since: float | None = None

    # -- one look, one decision ----------------------------------------------------------------
    def step(self) -> None:
        now = self._clock()
        try:
            listing = self._control.describe()
        except NitroLLMError as exc:
            self._enter("nitro-cli-failed", f"describe-enclaves failed: {exc.message}")
            return
        if not listing.running:
            self._gone(now)
        elif listing.debug_mode:
            self._enter("debug-mode", "the enclave runs in debug mode (console, zero PCRs): replacing it")
            self._replace(now, "debug mode")
        else:
            self._watch(now)

    def _gone(self, now: float) -> None:
        if self.state in ("healthy", "booting", "unhealthy", "gateway-unreachable"):
            self._enter("gone", "the enclave is no longer listed by nitro-cli")
            self._schedule_restart(now)
        if now < self._next_start:
            self._enter("waiting", f"next start in {self._next_start - now:.0f} s (backoff)")
            return
        self._enter("starting", f"starting the enclave (start {self.starts + 1})")
        try:
            enclave_id = self._control.start()
        except NitroLLMError as exc:
            self._enter("start-failed", f"start failed: {exc.message}")
            self._schedule_restart(now)
            return
        self.starts += 1
        self._started_at = now
        self._unhealthy_since = None
        self._healthy_since = None
        self._enter("booting", f"started {enclave_id or 'the enclave'}; waiting for /healthz")

    def _watch(self, now: float) -> None:
        if self._started_at is None:  # adopted: already running when the supervisor started
            self._started_at = now
        health = self._control.health()
        if health.status == HEALTHY:
            if self._healthy_since is None:
                self._healthy_since = now
            if now - self._healthy_since >= self._policy.healthy_reset:
                self.failures = 0
            self._unhealthy_since = None
            self._enter("healthy", "the enclave answers through the gateway")
            return
        self._healthy_since = None
        if health.status == GATEWAY_UNREACHABLE:
            self._enter("gateway-unreachable", f"cannot judge the enclave: {health.detail}")
            return
        if now - self._started_at < self._policy.boot_grace:
            self._enter("booting", f"not answering yet ({health.detail})")
            return
        if self._unhealthy_since is None:
            self._unhealthy_since = now
        waited = now - self._unhealthy_since
        if waited < self._policy.unhealthy_after:
            self._enter("unhealthy", f"listed but not answering ({health.detail})")
            return
        self._enter("wedged", f"listed but not answering for {waited:.0f} s: terminating it")
        self._replace(now, "wedged")

    def _replace(self, now: float, why: str) -> None:
        try:
            self._control.terminate()
        except NitroLLMError as exc:
            self._enter("terminate-failed", f"terminating the {why} enclave failed: {exc.message}")
            return
        self._schedule_restart(now)

    def _schedule_restart(self, now: float) -> None:
        self.failures += 1
        delay = min(self._policy.backoff_initial * 2 ** (self.failures - 1), self._policy.backoff_max)
        self._next_start = now + delay
        self._started_at = None

    def _enter(self, state: str, message: str) -> None:
        """One log line per transition, not per look."""
        if state != self.state:
            log.warning("%s -> %s: %s", self.state, state, message)
            self.state = state

    # -- the loop ------------------------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        """Look every ``interval`` until ``stop`` is set (SIGTERM from systemd sets it)."""
        while not stop.is_set():
            self.step()
            stop.wait(self._policy.interval)


def wait_until_healthy(
    probe: Callable[[], Health],
    *,
    timeout: float,
    interval: float,
    clock: Callable[[], float],
    sleep: Callable[[float], None],
) -> Health:
    """Ask ``probe`` (the gateway's /healthz) every ``interval`` until it says HEALTHY, or until
    ``timeout`` seconds have passed; return the last answer either way.

    A fleet instance signals CloudFormation only after this says HEALTHY, so that a rolling update
    waits for the new enclave to answer before it replaces the next old instance, and rolls back when
    the new enclave never does."""
    deadline = clock() + timeout
    while True:
        health = probe()
        if health.status == HEALTHY or clock() >= deadline:
            return health
        sleep(min(interval, max(deadline - clock(), 0.0)))
