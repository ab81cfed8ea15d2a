"""The attested protocol wired for real, in one process: enclave server -> Unix socket -> gateway app.

The enclave is the real ``EnclaveServer`` with the real ``AttestedHandler`` and the emulated NSM
(signed by a dev CA made for the test) and the echo engine, so answers are exact and instant; the
gateway is the real FastAPI app, reached through an httpx client. Nothing is mocked: only the model
is replaced, which the e2e tests (tests/e2e/test_attested.py) put back.
"""

from __future__ import annotations

import hashlib
import socket
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from wire_tools import RunningServer

from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.enclave.attested_handler import AttestedHandler, config_digest
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.gateway.app import create_app
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.kms.cms import open_enveloped_data
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.transport import close_listener, connect, listen
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

PCRS = {i: hashlib.sha384(f"wired pcr{i}".encode()).digest() for i in (0, 1, 2)}
MODEL_DIGEST = hashlib.sha256(b"model file").hexdigest()
GATEWAY = "http://gateway.test"


def _no_kms(_credentials):
    raise AssertionError("the attested protocol must not call KMS")


@dataclass
class Enclave:
    """One running enclave process stand-in; ``restart`` gives it new session keys, as a reboot does."""

    address: str
    ca: DevCA
    config: EnclaveConfig
    pcrs: dict
    debug: bool = False
    server: EnclaveServer | None = None
    listener: socket.socket | None = None
    handler: AttestedHandler | None = None

    def start(self) -> Enclave:
        nsm = open_emulated_nsm(ca=self.ca, pcrs=self.pcrs, debug=self.debug)
        self.handler = AttestedHandler.generate(
            nsm, model_digest=MODEL_DIGEST, config_digest=config_digest(self.config.measured())
        )
        self.server = EnclaveServer(
            engine=EchoEngine(),
            key_release=KeyRelease(nsm=nsm, kms_client_factory=_no_kms, open_envelope=open_enveloped_data),
            config=self.config,
            io_timeout=5.0,
            attested=self.handler,
        )
        self.listener = listen(self.address)
        self.server.start(self.listener)
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.stop()
            close_listener(self.listener, self.address)
            self.server = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def stats(self) -> dict:
        return self.call(frame_kinds.ping_frame())[0]

    def call(self, frame: dict) -> list[dict]:
        with connect(self.address, 5.0) as sock:
            sock.sendall(encode_frame(frame))
            sock.shutdown(socket.SHUT_WR)
            out = []
            while (reply := read_frame(sock)) is not None:
                out.append(reply)
            return out


@dataclass
class Deployment:
    enclave: Enclave
    gateway: TestClient
    ca: DevCA

    def policy(self, **over) -> ClientPolicy:
        fields = {
            "expected_pcrs": dict(PCRS),
            "trust_root": TrustRoot(pem=self.ca.root_pem.decode()),
            "unsafe_dev_root": True,
            "model_digest": MODEL_DIGEST,
        }
        fields.update(over)
        return ClientPolicy(**fields)

    def client(
        self, *, suite: str = "x25519", http: httpx.Client | None = None, **policy
    ) -> AttestedConversation:
        return AttestedConversation(GATEWAY, self.policy(**policy), suite=suite, http=http or self.gateway)


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return DevCA.load_or_create(tmp_path_factory.mktemp("wired-ca") / "dev-ca")


@pytest.fixture
def deploy(tmp_path, ca):
    """Factory: an enclave (PCRs, debug mode as asked) behind a real gateway app."""
    started: list[Enclave] = []

    def make(*, pcrs=None, debug=False, config=None) -> Deployment:
        address = f"unix:{tmp_path / f'enclave{len(started)}.sock'}"
        enclave = Enclave(address, ca, config or EnclaveConfig(engine="echo"), pcrs or PCRS, debug).start()
        started.append(enclave)
        gateway = TestClient(create_app(GatewaySettings(enclave=address)), base_url=GATEWAY)
        return Deployment(enclave, gateway, ca)

    yield make
    for enclave in started:
        enclave.stop()


@pytest.fixture
def serve():
    return RunningServer


@pytest.fixture
def state_home(tmp_path, monkeypatch) -> Path:
    """An empty NITRO_LLM_HOME, so default paths (client.json, policy.json) are the test's own."""
    home = tmp_path / "home"
    monkeypatch.setenv("NITRO_LLM_HOME", str(home))
    return home
