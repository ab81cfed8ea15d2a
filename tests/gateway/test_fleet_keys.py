"""The gateway keeps a fleet replica's enclave holding the file's fleet key generations, and its
/healthz tells a balancer to stay away until the enclave holds one (scripted link, fake clock)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from gateway_fakes import FakeClock, ScriptedLink

from nitro_llm.fleet.key_file import FleetKeyFile, FleetKeyGeneration
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.enclave_monitor import EnclaveMonitor
from nitro_llm.gateway.fleet_keys import MAX_BACKOFF, FleetKeyPusher, FleetKeySource
from nitro_llm.gateway.settings import GatewaySettings

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"


def generation(n: int) -> FleetKeyGeneration:
    return FleetKeyGeneration(f"{n:016x}", n, b"kms-ciphertext-%d" % n, "2025-01-01T00:00:00+00:00")


class FleetLink(ScriptedLink):
    """A scripted fleet replica: reports what it holds, installs what it is sent (or refuses)."""

    def __init__(self) -> None:
        super().__init__()
        self.held: tuple[str | None, str | None] = (None, None)
        self.refuse: str | None = None

    async def call(self, frame: dict[str, object], timeout: float = 10.0) -> dict[str, object]:
        if frame["t"] == "fleet_keys":
            self.received.append(dict(frame))
            if self.refuse:
                return {"t": "error", "code": self.refuse, "message": "no", "hint": "", "retryable": False}
            current: Any = frame["current"]
            previous: Any = frame["previous"]
            self.held = (current["id"], previous["id"] if previous else None)
            return {"t": "ok"}
        reply = await super().call(frame, timeout)
        if reply["t"] == "pong":
            state = "ready" if self.held[0] else "refused" if self.refuse else "missing"
            reply["fleet_key"] = {"state": state, "current": self.held[0], "previous": self.held[1]}
        return reply

    def pushes(self) -> int:
        return sum(1 for f in self.received if f.get("t") == "fleet_keys")


def write(path: Path, keys: FleetKeyFile) -> FleetKeySource:
    keys.save(path)
    return FleetKeySource(path)


def pusher(link: FleetLink, source: FleetKeySource, clock: FakeClock) -> FleetKeyPusher:
    return FleetKeyPusher(link, EnclaveMonitor(link, clock=clock), source, clock=clock)


def test_pushes_until_the_enclave_holds_the_file_then_follows_rotation(tmp_path):
    link, clock = FleetLink(), FakeClock()
    path = tmp_path / "fleet.json"
    v1 = FleetKeyFile(ARN, generation(1))
    source = write(path, v1)
    push = pusher(link, source, clock)

    async def steps() -> list[str]:
        out = [await push.step()]
        clock.advance(2)  # past the cached pong
        out.append(await push.step())
        v2 = v1.rotated(generation(2))
        v2.save(path)
        clock.advance(2)
        out.append(await push.step())
        clock.advance(2)
        out.append(await push.step())
        return out

    assert asyncio.run(steps()) == ["pushed", "in-sync", "pushed", "in-sync"]
    assert link.held == (generation(2).id, generation(1).id)


def test_waits_for_credentials_before_asking_the_enclave_to_call_kms(tmp_path):
    link, clock = FleetLink(), FakeClock()
    link.has_credentials = False
    push = pusher(link, write(tmp_path / "fleet.json", FleetKeyFile(ARN, generation(1))), clock)
    assert asyncio.run(push.step()) == "waiting:no_credentials"
    assert link.pushes() == 0


def test_a_refusal_is_retried_with_a_growing_pause_and_a_changed_file_at_once(tmp_path):
    link, clock = FleetLink(), FakeClock()
    link.refuse = "kms_denied"
    path = tmp_path / "fleet.json"
    v1 = FleetKeyFile(ARN, generation(1))
    push = pusher(link, write(path, v1), clock)

    async def steps() -> list[str]:
        out = [await push.step()]  # refused: pause 1 s
        clock.advance(1.5)
        out.append(await push.step())  # refused again: pause 2 s
        clock.advance(1.5)
        out.append(await push.step())  # still pausing
        v1.rotated(generation(2)).save(path)  # the operator fixed something: push at once
        out.append(await push.step())
        return out

    assert asyncio.run(steps()) == [
        "refused:kms_denied",
        "refused:kms_denied",
        "waiting:backoff",
        "refused:kms_denied",
    ]
    assert link.pushes() == 3
    for _ in range(20):
        push._refused(v1, "kms_denied")
    assert push._failed is not None and push._failed.not_before - clock() == MAX_BACKOFF


def test_an_enclave_that_is_no_fleet_replica_is_never_sent_the_file(tmp_path):
    link, clock = ScriptedLink(), FakeClock()  # its pong has no fleet_key
    push = FleetKeyPusher(
        link, EnclaveMonitor(link, clock=clock), write(tmp_path / "f.json", FleetKeyFile(ARN, generation(1)))
    )
    assert asyncio.run(push.step()) == "not-a-fleet-replica"
    assert not [f for f in link.received if f.get("t") == "fleet_keys"]


def test_healthz_is_503_while_the_replica_holds_no_fleet_key(tmp_path):
    link, clock = FleetLink(), FakeClock()
    source = write(tmp_path / "fleet.json", FleetKeyFile(ARN, generation(1)))
    settings = GatewaySettings(enclave="unix:/nonexistent/enclave.sock")
    client = TestClient(create_app(settings, link=link, clock=clock))  # no pusher: nothing installs it
    r = client.get("/healthz")
    assert r.status_code == 503 and r.json()["enclave"] == "fleet_key_unavailable"
    asyncio.run(pusher(link, source, clock).step())
    clock.advance(2)
    assert client.get("/healthz").json() == {"gateway": "ok", "enclave": "ok"}
