"""Supervision with real processes: a real gateway on loopback (HTTPS with a self-signed
certificate), the stand-in nitro-cli starting a stand-in enclave process, and the supervisor's own
NitroCliControl (the EIF checked against its manifest before every start). The enclave is killed,
then wedged (SIGSTOP); each time the supervisor restarts it and the gateway's /healthz recovers.

The supervisor's clock is injected: backoff and grace periods pass when the test advances it, so
nothing waits for them. What does take real time (the gateway noticing the enclave) is waited for
in bounded loops that look again on each pass.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import signal
import ssl
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import image_standin
import pytest
import standins
from standins.nitro_cli import alive
from standins.recording import calls

from nitro_llm.deploy import tls_cert
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.enclave_control import NitroCliControl
from nitro_llm.deploy.supervisor import Supervisor

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]


def eventually(check: Callable[[], bool], what: str, tries: int = 300) -> None:
    pause = threading.Event()
    for _ in range(tries):
        if check():
            return
        pause.wait(0.05)
    raise AssertionError(f"never happened: {what}")


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def host(tmp_path: Path, free_port: int, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict]:
    bin_dir = standins.install(tmp_path / "bin", ["nitro-cli", "nitro-llm-enclave-standin"])
    sock = tmp_path / "enclave.sock"
    for key, value in {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "STANDIN_STATE": str(tmp_path / "state"),
        "STANDIN_ENCLAVE_SOCKET": str(sock),
        "STANDIN_DEVCA": str(tmp_path / "devca"),
        "STANDIN_LOG": str(tmp_path / "calls.log"),
    }.items():
        monkeypatch.setenv(key, value)
    eif, manifest = image_standin.build(tmp_path / "image", image_standin.write_blobs(tmp_path / "blobs"))
    cert, key = tmp_path / "tls.crt", tmp_path / "tls.key"
    cert_pem, key_pem = tls_cert.self_signed([], now=dt.datetime.now(dt.UTC))
    cert.write_bytes(cert_pem)
    key.write_bytes(key_pem)
    cfg = DeployConfig.from_mapping(
        {
            "region": "eu-west-1",
            "enclave": {"eif": str(eif), "manifest": str(manifest), "memory_mib": 512},
            "gateway": {"host": "127.0.0.1", "port": free_port, "tls_cert": str(cert), "tls_key": str(key)},
            "supervisor": {
                "boot_grace": 30,
                "unhealthy_after": 20,
                "backoff_initial": 5,
                "health_timeout": 20,
            },
        },
        tmp_path,
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO}:{REPO / 'dev'}"}
    gateway = subprocess.Popen(
        [sys.executable, "-m", "nitro_llm.cli.main", "gateway", "--enclave", f"unix:{sock}",
         "--host", "127.0.0.1", "--port", str(free_port), "--tls-cert", str(cert), "--tls-key", str(key)],
        env=env, stdout=subprocess.DEVNULL, stderr=(tmp_path / "gateway.log").open("w"),
    )  # fmt: skip
    tls = ssl.create_default_context(cafile=cert)
    yield {"cfg": cfg, "gateway": gateway, "tls": tls, "log": tmp_path / "calls.log", "tmp": tmp_path}
    gateway.terminate()
    gateway.wait(timeout=30)
    for entry in calls(tmp_path / "calls.log", "nitro-cli"):  # the enclaves the stand-in started
        pid = entry.get("enclave_pid")
        if pid and alive(pid):
            os.kill(pid, signal.SIGKILL)


def healthz(host: dict) -> int:
    url = f"https://127.0.0.1:{host['cfg'].gateway.port}/healthz"
    try:
        return httpx.get(url, verify=host["tls"], timeout=10).status_code
    except httpx.HTTPError:
        return 0


def enclave_pid(host: dict) -> int:
    return [e for e in calls(host["log"], "nitro-cli") if e["argv"][0] == "run-enclave"][-1]["enclave_pid"]


def test_a_killed_or_wedged_enclave_is_restarted_and_health_recovers(host, caplog):
    caplog.set_level(logging.WARNING, "nitro_llm.deploy.supervisor")
    clock = FakeClock()
    sup = Supervisor(NitroCliControl(host["cfg"]), host["cfg"].supervisor, clock=clock)
    eventually(lambda: healthz(host) == 503, "the gateway serves /healthz (its enclave not yet up)")

    def step_until(state: str) -> None:
        def stepped() -> bool:
            sup.step()
            return sup.state == state

        eventually(stepped, f"supervisor state {state}")

    # Boot: the supervisor starts the enclave (production mode), the gateway reaches it.
    step_until("healthy")
    assert healthz(host) == 200
    first = enclave_pid(host)

    # Killed: no longer listed; restarted after the backoff (the clock is the test's).
    os.kill(first, signal.SIGKILL)
    step_until("waiting")
    sup.step()
    assert sup.state == "waiting"  # backoff, no restart yet
    clock.now += 5
    step_until("healthy")
    second = enclave_pid(host)
    assert second != first
    eventually(lambda: healthz(host) == 200, "/healthz recovers after the restart")

    # Wedged: still listed, not answering. Tolerated during boot grace and unhealthy_after, then replaced.
    os.kill(second, signal.SIGSTOP)
    clock.now += 30  # past boot_grace
    step_until("unhealthy")
    clock.now += 20  # past unhealthy_after
    sup.step()
    assert sup.state == "wedged"
    assert not alive(second)  # terminated through nitro-cli
    clock.now += 10  # the second restart's backoff
    step_until("healthy")
    assert enclave_pid(host) not in (first, second)
    eventually(lambda: healthz(host) == 200, "/healthz recovers after the wedged enclave is replaced")

    runs = [e["argv"] for e in calls(host["log"], "nitro-cli") if e["argv"][0] == "run-enclave"]
    assert len(runs) == 3
    assert all(not {"--debug-mode", "--attach-console"} & set(argv) for argv in runs)
    assert any(e["argv"][0] == "terminate-enclave" for e in calls(host["log"], "nitro-cli"))
    changes = [r.getMessage().split(":")[0] for r in caplog.records]
    for expected in ("healthy -> gone", "waiting -> starting", "healthy -> unhealthy", "unhealthy -> wedged"):
        assert expected in changes, changes


def test_a_tampered_eif_is_never_started(host):
    eif = host["cfg"].path(host["cfg"].enclave.eif)
    data = bytearray(eif.read_bytes())
    data[-50] ^= 0xFF
    eif.write_bytes(bytes(data))
    sup = Supervisor(NitroCliControl(host["cfg"]), host["cfg"].supervisor, clock=FakeClock())
    sup.step()
    assert sup.state == "start-failed"
    assert not [e for e in calls(host["log"], "nitro-cli") if e["argv"][0] == "run-enclave"]
