"""The supervisor's decisions, one look at a time, with a scripted host and a clock that moves only
when the test says so: restart a gone enclave, back off, replace a debug-mode or wedged one, leave
a booting one alone, never act when the gateway itself is unreachable; one log line per change."""

from __future__ import annotations

import itertools
import logging

import pytest

from nitro_llm.deploy.config import SupervisorSection
from nitro_llm.deploy.enclave_control import health_url, parse_listing
from nitro_llm.deploy.errors import EifRejected
from nitro_llm.deploy.supervisor import (
    ENCLAVE_UNHEALTHY,
    GATEWAY_UNREACHABLE,
    HEALTHY,
    Health,
    Listing,
    Supervisor,
)

POLICY = SupervisorSection(
    interval=1, boot_grace=30, unhealthy_after=20, backoff_initial=5, backoff_max=40, healthy_reset=100
)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Host:
    """A scripted nitro-cli and gateway: what describe and health return, what start/terminate did."""

    def __init__(self) -> None:
        self.running = False
        self.debug = False
        self.health_status = HEALTHY
        self.actions: list[str] = []
        self.start_error: Exception | None = None

    def describe(self) -> Listing:
        return Listing(running=self.running, debug_mode=self.debug)

    def start(self) -> str:
        self.actions.append("start")
        if self.start_error:
            raise self.start_error
        self.running, self.debug = True, False
        return f"enc-{self.actions.count('start')}"

    def terminate(self) -> None:
        self.actions.append("terminate")
        self.running = False

    def health(self) -> Health:
        return Health(self.health_status, "scripted")


@pytest.fixture
def world():
    clock, host = Clock(), Host()
    return clock, host, Supervisor(host, POLICY, clock=clock)


def test_starts_at_once_then_watches(world):
    _, host, sup = world
    sup.step()
    assert host.actions == ["start"] and sup.state == "booting"
    sup.step()
    assert sup.state == "healthy" and host.actions == ["start"]


def test_a_gone_enclave_is_restarted_with_doubling_backoff(world, caplog):
    clock, host, sup = world
    sup.step(), sup.step()
    caplog.set_level(logging.WARNING, "nitro_llm.deploy.supervisor")
    delays = []
    for _ in range(5):
        host.running = False  # it dies
        sup.step()
        assert sup.state == "waiting"
        waited = 0.0
        while "start" not in host.actions[-1:] or sup.state != "booting":
            clock.now += 1
            waited += 1
            sup.step()
            assert waited <= 100
        delays.append(waited)
    assert delays == [5, 10, 20, 40, 40]  # initial, doubling, capped at backoff_max
    changes = [tuple(r.getMessage().split(":")[0].split(" -> ")) for r in caplog.records]
    assert changes[3:7] == [("healthy", "gone"), ("gone", "waiting"), ("waiting", "starting"),
                            ("starting", "booting")]  # fmt: skip
    # One line per change, not per look: each line starts where the previous one ended.
    assert all(a != b for a, b in changes)
    assert all(prev[1] == cur[0] for prev, cur in itertools.pairwise(changes))
    assert len(changes) == 3 + 4 * 5


def test_backoff_resets_after_staying_healthy(world):
    clock, host, sup = world
    sup.step(), sup.step()
    host.running = False
    sup.step()
    assert sup.failures == 1
    clock.now += 5
    sup.step(), sup.step()
    assert sup.state == "healthy"
    clock.now += POLICY.healthy_reset
    sup.step()
    assert sup.failures == 0


def test_a_debug_mode_enclave_is_replaced_by_a_production_one(world):
    clock, host, sup = world
    host.running, host.debug = True, True  # someone ran 'nitro-cli run-enclave --debug-mode'
    sup.step()
    assert host.actions == ["terminate"] and sup.state == "debug-mode"
    clock.now += POLICY.backoff_initial
    sup.step()
    assert host.actions == ["terminate", "start"] and not host.debug


def test_booting_then_wedged(world):
    clock, host, sup = world
    sup.step()
    host.health_status = ENCLAVE_UNHEALTHY
    clock.now += POLICY.boot_grace - 1
    sup.step()
    assert sup.state == "booting" and host.actions == ["start"]  # the model is still loading
    clock.now += 1
    sup.step()
    assert sup.state == "unhealthy"
    clock.now += POLICY.unhealthy_after - 1
    sup.step()
    assert host.actions == ["start"]
    clock.now += 1
    sup.step()
    assert sup.state == "wedged" and host.actions == ["start", "terminate"]


def test_gateway_unreachable_is_not_the_enclaves_fault(world):
    clock, host, sup = world
    sup.step(), sup.step()
    host.health_status = GATEWAY_UNREACHABLE
    for _ in range(10):
        clock.now += POLICY.unhealthy_after
        sup.step()
    assert sup.state == "gateway-unreachable" and host.actions == ["start"]


def test_a_refused_eif_is_retried_with_backoff_not_in_a_loop(world):
    clock, host, sup = world
    host.start_error = EifRejected("differs")
    sup.step()
    assert sup.state == "start-failed"
    for _ in range(4):
        sup.step()
    assert host.actions == ["start"]  # waiting out the backoff, not hammering nitro-cli
    clock.now += POLICY.backoff_initial
    sup.step()
    assert host.actions == ["start", "start"]


def test_describe_enclaves_json_is_read_by_name():
    listing = """[{"EnclaveName": "other", "State": "RUNNING", "Flags": "NONE"},
                  {"EnclaveName": "nitro-llm", "EnclaveID": "i-1-enc2", "State": "RUNNING",
                   "Flags": "DEBUG_MODE"}]"""
    assert parse_listing(listing, "nitro-llm") == Listing(True, True, "i-1-enc2")
    assert parse_listing("[]", "nitro-llm") == Listing(False)
    assert not parse_listing('[{"EnclaveName": "nitro-llm", "State": "TERMINATING"}]', "nitro-llm").running


def test_health_url_is_loopback_https(tmp_path):
    from nitro_llm.deploy.config import DeployConfig

    cfg = DeployConfig.from_mapping({"region": "eu-west-1", "gateway": {"port": 9443}}, tmp_path)
    assert health_url(cfg) == "https://127.0.0.1:9443/healthz"


# -- wait-healthy: what a fleet instance waits for before it signals its Auto Scaling group ---------


class Probe:
    def __init__(self, clock: Clock, answers: list[Health]) -> None:
        self.clock, self.answers, self.asked = clock, answers, 0

    def __call__(self) -> Health:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def test_wait_until_healthy_returns_once_the_enclave_answers():
    from nitro_llm.deploy.supervisor import wait_until_healthy

    clock = Clock()
    probe = Probe(clock, [Health(GATEWAY_UNREACHABLE), Health(ENCLAVE_UNHEALTHY), Health(HEALTHY)])
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock.now += seconds

    health = wait_until_healthy(probe, timeout=60, interval=5, clock=clock, sleep=sleep)
    assert health.status == HEALTHY and probe.asked == 3 and slept == [5, 5]


def test_wait_until_healthy_gives_up_at_the_deadline_with_the_last_answer():
    from nitro_llm.deploy.supervisor import wait_until_healthy

    clock = Clock()
    probe = Probe(clock, [Health(ENCLAVE_UNHEALTHY, "gateway says enclave=enclave_unreachable")])

    def sleep(seconds: float) -> None:
        clock.now += seconds

    health = wait_until_healthy(probe, timeout=12, interval=5, clock=clock, sleep=sleep)
    assert health == Health(ENCLAVE_UNHEALTHY, "gateway says enclave=enclave_unreachable")
    assert clock.now == 1012 and probe.asked == 4  # at 0, 5, 10 and the deadline, never past it


def _wait_healthy_cli(config, *extra: str):
    import typer
    from typer.testing import CliRunner

    from nitro_llm.cli import deploy as deploy_cli

    app = typer.Typer()
    deploy_cli.register(app)
    return CliRunner().invoke(app, ["deploy", "wait-healthy", "--config", str(config), *extra])


def test_wait_healthy_command_exits_0_once_healthz_says_ok_and_1_at_its_timeout(tmp_path, free_port):
    """Against a stand-in gateway over TLS with its own certificate, as the supervisor checks it."""
    import datetime
    import json
    import ssl
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from nitro_llm.deploy import tls_cert

    cert_pem, key_pem = tls_cert.self_signed(["127.0.0.1"], now=datetime.datetime.now(datetime.UTC))
    (tmp_path / "tls.crt").write_bytes(cert_pem)
    (tmp_path / "tls.key").write_bytes(key_pem)
    config = tmp_path / "deploy.toml"
    config.write_text(
        f'region = "eu-west-1"\n[gateway]\nhost = "127.0.0.1"\nport = {free_port}\n'
        f'tls_cert = "{tmp_path}/tls.crt"\ntls_key = "{tmp_path}/tls.key"\n'
    )
    answers = [
        (503, {"gateway": "ok", "enclave": "enclave_unreachable"}),
        (200, {"gateway": "ok", "enclave": "ok"}),
    ]

    class Healthz(BaseHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

        def do_GET(self) -> None:
            status, body = answers.pop(0) if len(answers) > 1 else answers[0]
            data = json.dumps(body).encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    down = _wait_healthy_cli(config, "--timeout", "1", "--interval", "0.2")
    assert down.exit_code == 1 and "did not answer within 1 s: gateway-unreachable" in down.output
    server = ThreadingHTTPServer(("127.0.0.1", free_port), Healthz)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tmp_path / "tls.crt", tmp_path / "tls.key")
    server.socket = context.wrap_socket(server.socket, server_side=True)
    threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
    try:
        up = _wait_healthy_cli(config, "--timeout", "30", "--interval", "0.1")
    finally:
        server.shutdown()
        server.server_close()
    assert up.exit_code == 0, up.output
    assert "healthy" in up.stdout and answers == [(200, {"gateway": "ok", "enclave": "ok"})]
