"""Keep a fleet replica's enclave holding the fleet key generations the fleet key file lists.

The gateway reads the file (KMS ciphertext only: nitro_llm/fleet/key_file.py) and relays it to its
enclave as a ``fleet_keys`` frame whenever the enclave's pong shows other generations than the file's:
at start-up, after the enclave restarts, and when the operator rotates or retires (the file is re-read
when it changes, no restart). The enclave obtains each generation from KMS itself; the gateway can
neither open nor alter what it relays. A refused push (KMS denied, rollback) is retried with a growing
pause, so a misconfigured replica does not call KMS every second; a changed file is pushed at once.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import KW_ONLY, dataclass, field
from pathlib import Path
from typing import Any

from nitro_llm.errors import NitroLLMError
from nitro_llm.fleet.key_file import FleetKeyFile
from nitro_llm.gateway.clock import Clock, system_clock
from nitro_llm.gateway.enclave_link import EnclaveLink
from nitro_llm.gateway.enclave_monitor import EnclaveMonitor

log = logging.getLogger("nitro_llm.gateway.fleet_keys")

CHECK_INTERVAL = 1.0
PUSH_TIMEOUT = 30.0
"""The enclave asks KMS once per new generation, within its own 8 s retry deadline each."""
MAX_BACKOFF = 60.0


class FleetKeySource:
    """The fleet key file, parsed again only when its size or modification time changes."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._seen: tuple[int, int] | None = None
        self._keys: FleetKeyFile | None = None

    def get(self) -> FleetKeyFile:
        stat = self.path.stat()
        seen = (stat.st_mtime_ns, stat.st_size)
        if self._keys is None or seen != self._seen:
            self._keys, self._seen = FleetKeyFile.load(self.path), seen
        return self._keys


def enclave_holds(pong: Mapping[str, Any], keys: FleetKeyFile) -> bool | None:
    """True when the enclave's pong shows exactly the file's generations, False when not, None when
    the enclave is no fleet replica (its pong has no ``fleet_key``: nothing to push to)."""
    status = pong.get("fleet_key")
    if not isinstance(status, Mapping):
        return None
    return (status.get("current"), status.get("previous")) == keys.ids()


@dataclass
class _Attempt:
    ids: tuple[str, str | None]
    failures: int
    not_before: float


@dataclass(eq=False)
class FleetKeyPusher:
    """One check per call of :meth:`step`; :meth:`run` calls it forever."""

    link: EnclaveLink
    monitor: EnclaveMonitor
    source: FleetKeySource
    _: KW_ONLY
    clock: Clock = system_clock
    interval: float = CHECK_INTERVAL
    pushes: int = field(default=0, init=False)
    _failed: _Attempt | None = field(default=None, init=False, repr=False)
    _warned_not_fleet: bool = field(default=False, init=False, repr=False)

    async def run(self) -> None:
        while True:
            await self.step()
            await asyncio.sleep(self.interval)

    async def step(self) -> str:
        """Push if needed; return what happened (for logs and tests): "in-sync", "pushed",
        "refused:CODE", "waiting:REASON" or "not-a-fleet-replica"."""
        try:
            pong = await self.monitor.pong(max_age=self.interval)
        except NitroLLMError as exc:
            return f"waiting:{exc.code}"
        if pong.get("has_credentials") is False:
            return "waiting:no_credentials"  # the enclave needs them to ask KMS
        try:
            keys = await asyncio.to_thread(self.source.get)
        except (NitroLLMError, OSError) as exc:
            code = getattr(exc, "code", type(exc).__name__)
            log.warning("fleet key file unreadable (%s): the enclave keeps what it holds", code)
            return f"waiting:{code}"
        holds = enclave_holds(pong, keys)
        if holds is None:
            if not self._warned_not_fleet:
                log.warning(
                    "--fleet-key-file given, but the enclave is not a fleet replica (no --fleet-kms-key)"
                )
                self._warned_not_fleet = True
            return "not-a-fleet-replica"
        if holds:
            self._failed = None
            return "in-sync"
        failed = self._failed
        if failed is not None and failed.ids == keys.ids() and self.clock() < failed.not_before:
            return "waiting:backoff"
        try:
            reply = await self.link.call(keys.frame(), timeout=PUSH_TIMEOUT)
        except NitroLLMError as exc:
            return self._refused(keys, exc.code)
        if reply.get("t") != "ok":
            return self._refused(keys, str(reply.get("code", "bad_enclave_reply")))
        self._failed = None
        self.pushes += 1
        log.info("fleet key handed to the enclave: current=%s previous=%s", *keys.ids())
        return "pushed"

    def _refused(self, keys: FleetKeyFile, code: str) -> str:
        failures = self._failed.failures + 1 if self._failed and self._failed.ids == keys.ids() else 1
        pause = min(MAX_BACKOFF, self.interval * 2 ** (failures - 1))
        self._failed = _Attempt(keys.ids(), failures, self.clock() + pause)
        log.warning("the enclave refused the fleet key (%s); next attempt in %.0f s", code, pause)
        return f"refused:{code}"


def fleet_key_health(pong: Mapping[str, Any]) -> str:
    """What /healthz says of a pong: "ok", or "fleet_key_unavailable" for a fleet replica that holds
    no fleet key (it serves nothing, so a balancer must not send it anyone)."""
    status = pong.get("fleet_key")
    if isinstance(status, Mapping) and status.get("state") != "ready":
        return "fleet_key_unavailable"
    return "ok"
