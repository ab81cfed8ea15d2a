"""The gateway's enclave monitor against a scripted enclave on a real socket: down is noticed and
answered with 503 + Retry-After without touching the link, a restart is seen, credentials follow."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest

from nitro_llm.gateway.credentials import RoleCredentials
from nitro_llm.gateway.enclave_link import TransportLink
from nitro_llm.gateway.enclave_monitor import EnclaveMonitor
from nitro_llm.gateway.errors import EnclaveUnavailable
from nitro_llm.gateway.settings import GatewaySettings


class StaticCredentials:
    def __init__(self) -> None:
        self.calls = 0

    def get(self) -> RoleCredentials:
        self.calls += 1
        return RoleCredentials("AKIAEXAMPLE", "secret-not-logged", "token")


def monitor_for(path, **kw) -> EnclaveMonitor:
    return EnclaveMonitor(TransportLink(GatewaySettings(enclave=f"unix:{path}", connect_timeout=1)), **kw)


def test_down_up_restart_and_credentials(enclave_peer):
    creds = StaticCredentials()
    monitor = monitor_for(enclave_peer.path, credentials=creds)

    async def scenario() -> None:
        await monitor.probe()
        assert monitor.state == "up"
        monitor.check_available()
        enclave_peer.sock.close()  # the enclave is gone: nothing listens any more
        os.unlink(enclave_peer.path)
        await monitor.probe()
        assert monitor.state == "down" and monitor.outages == 1
        with pytest.raises(EnclaveUnavailable) as info:
            monitor.check_available()
        assert info.value.status_code == 503 and info.value.retry_after

    asyncio.run(scenario())


def test_restart_is_detected_and_credentials_handed_over(tmp_path, make_peer):
    path = tmp_path / "restarting.sock"
    first = make_peer(path)
    first.uptime = 500
    creds = StaticCredentials()
    monitor = monitor_for(path, credentials=creds)

    async def scenario() -> None:
        await monitor.probe()
        assert monitor.state == "up" and creds.calls == 0  # it has credentials: nothing to hand over
        first.close()
        path.unlink()
        await monitor.probe()
        assert monitor.state == "down"
        second = make_peer(path)  # the restarted enclave: young, and without credentials
        second.uptime, second.has_credentials = 1, False
        await monitor.probe()
        assert monitor.state == "up" and monitor.recoveries == 1 and monitor.restarts_seen == 1
        await asyncio.to_thread(second.credentials_received.wait, 5)  # the hand-off runs in the background
        assert second.has_credentials and creds.calls == 1
        assert [f["t"] for f in second.received].count("credentials") == 1

    asyncio.run(scenario())


def test_concurrent_callers_share_one_ping(enclave_peer):
    monitor = monitor_for(enclave_peer.path)

    async def scenario() -> None:
        before = enclave_peer.connections
        replies = await asyncio.gather(*(monitor.pong(max_age=0.0) for _ in range(50)))
        assert all(r["t"] == "pong" for r in replies)
        assert enclave_peer.connections - before == 1
        await monitor.pong(max_age=5.0)  # cached: no new connection at all
        assert enclave_peer.connections - before == 1

    asyncio.run(scenario())


def test_gateway_answers_503_at_once_while_the_enclave_is_down(gateway, enclave_peer, issue):
    token = issue("clinic-a")
    gw = gateway()
    assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 200
    enclave_peer.close()
    os.unlink(enclave_peer.path)
    gw.clock.advance(2.0)  # past /healthz's one-second cache: the next one pings the enclave afresh
    assert httpx.get(f"{gw.url}/healthz", timeout=10).status_code == 503
    health = httpx.get(f"{gw.url}/healthz", timeout=10).json()
    assert health["supervision"]["state"] == "down" and health["supervision"]["outages"] == 1
    started = time.monotonic()
    r = httpx.post(
        f"{gw.url}/v1/infer", content=b"sealed", headers={"authorization": f"Bearer {token}"}, timeout=10
    )
    assert r.status_code == 503 and r.json()["code"] == "enclave_unavailable"
    assert int(r.headers["retry-after"]) >= 1
    assert time.monotonic() - started < 0.5
