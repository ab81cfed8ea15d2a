"""The product's commands as a user runs them: the installed ``nitro-llm`` entry point in its own
process, its output piped (or on a pseudo-terminal), against a real gateway app on a loopback port
in front of the real enclave server (emulated NSM, echo engine: exact, fast answers)."""

from __future__ import annotations

import http.server
import json
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from attested_wiring.conftest import MODEL_DIGEST, PCRS, Enclave, _no_kms
from cli_processes import UpProcess, cli_env
from wire_tools import RunningServer

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.enclave.attested_handler import AttestedHandler, config_digest
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.gateway.admission import AccessSettings
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.kms.cms import open_enveloped_data
from nitro_llm.transport import listen
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

NITRO_LLM = str(Path(sys.executable).with_name("nitro-llm"))


def run_cli(home: Path, *args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [NITRO_LLM, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=cli_env(home),
    )


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    (path / "local").mkdir(parents=True)
    return path


@pytest.fixture
def nitro_command(home: Path) -> tuple[str, dict[str, str]]:
    """The installed command's path and the environment to run it in (for tests that drive it)."""
    return NITRO_LLM, cli_env(home)


@pytest.fixture
def up(home: Path) -> Iterator[Callable[..., UpProcess]]:
    """``up(*args)``: 'nitro-llm up' (echo engine, source-tree enclave) in ``home``, once ready; every
    stack a test started is stopped after it."""
    started: list[UpProcess] = []

    def start(*args: str) -> UpProcess:
        stack = UpProcess(cli_env(home), *args)
        started.append(stack)
        return stack

    yield start
    for stack in started:
        stack.stop()


@pytest.fixture
def nitro(home: Path) -> Callable[..., subprocess.CompletedProcess[str]]:
    """``nitro("ask", "hi", stdin=..., timeout=...)``: the installed command, output piped."""

    def run(*args: str, stdin: str = "", timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return run_cli(home, *args, stdin=stdin, timeout=timeout)

    return run


@dataclass
class EchoEnclave(Enclave):
    """The attested wiring's enclave with an echo engine that may take its time per word."""

    delay: float = 0.0

    def start(self) -> EchoEnclave:
        nsm = open_emulated_nsm(ca=self.ca, pcrs=self.pcrs, debug=self.debug)
        self.handler = AttestedHandler.generate(
            nsm, model_digest=MODEL_DIGEST, config_digest=config_digest(self.config.measured())
        )
        self.server = EnclaveServer(
            engine=EchoEngine(delay_seconds=self.delay),
            key_release=KeyRelease(nsm=nsm, kms_client_factory=_no_kms, open_envelope=open_enveloped_data),
            config=self.config,
            io_timeout=5.0,
            attested=self.handler,
        )
        self.listener = listen(self.address)
        self.server.start(self.listener)
        return self


@dataclass
class Stack:
    """An enclave behind a gateway on a loopback port, and the client files 'nitro-llm up' writes."""

    enclave: EchoEnclave
    gateway_url: str
    ca: DevCA
    home: Path
    policy_path: Path = field(init=False)

    def __post_init__(self) -> None:
        self.policy_path = self.home / "local" / "policy.json"

    def policy(self) -> ClientPolicy:
        return ClientPolicy(
            expected_pcrs=dict(PCRS),
            trust_root=TrustRoot(pem=self.ca.root_pem.decode()),
            unsafe_dev_root=True,
            model_digest=MODEL_DIGEST,
        )

    def write_client_files(self, *, api_token: str | None = None, gateway_url: str | None = None) -> None:
        config = ClientConfig(
            gateway_url=gateway_url or self.gateway_url, key_id="alias/unused", api_token=api_token
        )
        config.save(self.home / "local" / "client.json")
        self.policy().save(self.policy_path)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> DevCA:
    return DevCA.load_or_create(tmp_path_factory.mktemp("cli-ca") / "dev-ca")


@pytest.fixture
def stack(tmp_path: Path, ca: DevCA, home: Path) -> Iterator[Callable[..., Stack]]:
    """Factory: ``stack(delay=0.0, tokens_file=None, wrap=None)``; ``wrap`` wraps the gateway's ASGI app
    (a hostile gateway). The client files are written for it."""
    running: list[tuple[EchoEnclave, RunningServer]] = []

    def make(*, delay: float = 0.0, tokens_file: Path | None = None, wrap=None) -> Stack:
        address = f"unix:{tmp_path / f'enclave{len(running)}.sock'}"
        enclave = EchoEnclave(address, ca, EnclaveConfig(engine="echo"), dict(PCRS), delay=delay).start()
        app = create_app(GatewaySettings(enclave=address), access=AccessSettings(tokens_file=tokens_file))
        server = RunningServer(wrap(app) if wrap else app).__enter__()
        running.append((enclave, server))
        made = Stack(enclave, server.url, ca, home)
        made.write_client_files()
        return made

    yield make
    for enclave, server in running:
        server.__exit__(None, None, None)
        enclave.stop()


class Recorder:
    """A plain HTTP server that records every request and answers 503: it stands where a gateway or
    KMS would, to prove that a command sent nothing at all."""

    def __init__(self) -> None:
        self.requests: list[str] = []
        recorder = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def _any(self) -> None:
                recorder.requests.append(f"{self.command} {self.path}")
                body = json.dumps({"code": "recorder", "message": "recorded"}).encode()
                self.send_response(503)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = _any

            def log_message(self, *args: object) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def recorder(home: Path) -> Iterator[Recorder]:
    """A recorder standing as both gateway and KMS in the client configuration (no policy written)."""
    rec = Recorder()
    ClientConfig(
        gateway_url=rec.url,
        key_id="alias/unused",
        kms_endpoint=rec.url,
        credentials={"access_key_id": "AKIDEXAMPLE", "secret_access_key": "secret"},
    ).save(home / "local" / "client.json")
    yield rec
    rec.close()
