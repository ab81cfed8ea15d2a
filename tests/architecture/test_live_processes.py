"""Each party's live process, started from its installed console entry point, holds only its side's code.

A ``sitecustomize`` put on the process's PYTHONPATH (the process itself is unchanged) writes
``sys.modules`` to a file when it receives SIGUSR1, so the list comes from the running server after
start-up, not from an import in the test's own interpreter. The rules are the import contracts'.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from architecture.boundary import forbidden_for, violations

NITRO_LLM = str(Path(sys.executable).with_name("nitro-llm"))

SITECUSTOMIZE = """
import json, os, signal, sys, importlib
for name in filter(None, os.environ.get("ARCH_TEST_EXTRA_IMPORT", "").split(",")):
    importlib.import_module(name)  # the negative test: a forbidden module sneaks in at start-up
def _dump(*_):
    path = os.environ["ARCH_TEST_MODULES_OUT"]
    with open(path + ".tmp", "w") as f:
        json.dump(sorted(sys.modules), f)
    os.replace(path + ".tmp", path)
signal.signal(signal.SIGUSR1, _dump)
"""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Party:
    def __init__(self, tmp: Path, argv: list[str], extra_import: str = "") -> None:
        hook = tmp / "hook"
        hook.mkdir(exist_ok=True)
        (hook / "sitecustomize.py").write_text(SITECUSTOMIZE)
        self.out = tmp / "modules.json"
        env = {
            **os.environ,
            "PYTHONPATH": str(hook),
            "ARCH_TEST_MODULES_OUT": str(self.out),
            "ARCH_TEST_EXTRA_IMPORT": extra_import,
        }
        self.log = (tmp / "party.log").open("wb")
        self.proc = subprocess.Popen(argv, env=env, stdout=self.log, stderr=subprocess.STDOUT, cwd=tmp)

    def modules(self, ready: threading.Event | None = None) -> list[str]:
        """Ask the running process for its modules; the file appears once the handler ran."""
        self.proc.send_signal(signal.SIGUSR1)
        done = threading.Event()
        for _ in range(600):  # bounded: 60 s in 0.1 s waits for the process to write the file
            if self.out.exists() or self.proc.poll() is not None:
                break
            done.wait(0.1)
        assert self.out.exists(), f"the process wrote no module list (exit {self.proc.poll()})"
        return json.loads(self.out.read_text())

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def _wait_for(condition, proc: subprocess.Popen, what: str) -> None:
    waiter = threading.Event()
    for _ in range(1200):  # bounded: 120 s
        if condition():
            return
        assert proc.poll() is None, f"{what} exited with {proc.returncode}"
        waiter.wait(0.1)
    raise AssertionError(f"timed out waiting for {what}")


def _listening(port: int) -> bool:
    with socket.socket() as s:
        return s.connect_ex(("127.0.0.1", port)) == 0


@pytest.fixture
def gateway_argv(tmp_path: Path) -> Iterator[tuple[list[str], int]]:
    tokens = tmp_path / "tokens.json"
    subprocess.run([NITRO_LLM, "gateway-token", str(tokens), "probe"], check=True, capture_output=True)
    port = _free_port()
    argv = [NITRO_LLM, "gateway", "--enclave", f"unix:{tmp_path / 'no-enclave.sock'}", "--port", str(port)]
    yield [*argv, "--api-tokens-file", str(tokens)], port


def _gateway_modules(tmp_path: Path, argv: list[str], port: int, extra_import: str = "") -> list[str]:
    party = Party(tmp_path, argv, extra_import)
    try:
        _wait_for(lambda: _listening(port), party.proc, "the gateway")
        return party.modules()
    finally:
        party.stop()


@pytest.mark.slow
def test_live_gateway_holds_no_code_that_opens_requests(tmp_path: Path, gateway_argv) -> None:
    argv, port = gateway_argv
    loaded = _gateway_modules(tmp_path, argv, port)
    assert "nitro_llm.gateway.app" in loaded  # the probe really saw the gateway
    assert violations(loaded, forbidden_for("nitro_llm.gateway")) == []


@pytest.mark.slow
def test_live_check_catches_a_forbidden_module(tmp_path: Path, gateway_argv) -> None:
    """The same check on a gateway into which a decrypting module was slipped must fail."""
    argv, port = gateway_argv
    loaded = _gateway_modules(tmp_path, argv, port, extra_import="nitro_llm.protocol.kms_envelope")
    assert "nitro_llm.protocol.kms_envelope" in violations(loaded, forbidden_for("nitro_llm.gateway"))


@pytest.mark.slow
def test_live_proxy_holds_nothing_of_gateway_or_enclave(tmp_path: Path) -> None:
    from nitro_llm.client.config import ClientConfig

    config = tmp_path / "client.json"
    ClientConfig(
        gateway_url="http://127.0.0.1:9", key_id="alias/probe", kms_endpoint="http://127.0.0.1:9"
    ).save(config)
    port = _free_port()
    argv = [NITRO_LLM, "proxy", "--port", str(port), "--protocol", "kms", "--config", str(config)]
    party = Party(tmp_path, argv)
    try:
        _wait_for(lambda: _listening(port), party.proc, "the proxy")
        loaded = party.modules()
    finally:
        party.stop()
    assert "nitro_llm.proxy.app" in loaded
    assert violations(loaded, forbidden_for("nitro_llm.proxy")) == []


@pytest.mark.slow
@pytest.mark.model
def test_live_enclave_holds_nothing_of_gateway_client_or_dev_tooling(tmp_path: Path) -> None:
    from nitro_llm_dev.nsm import emulated_transport
    from nitro_llm_dev.nsm.devca import DevCA
    from nitro_llm_dev.nsm.server import NsmEmulatorServer

    nsm = NsmEmulatorServer(
        emulated_transport(
            ca=DevCA.load_or_create(tmp_path / "ca"), pcrs={0: b"\1" * 48, 1: b"\2" * 48, 2: b"\3" * 48}
        ),
        tmp_path / "nsm.sock",
    ).start()
    sock = tmp_path / "enclave.sock"
    argv = [NITRO_LLM, "enclave", "serve", "--listen", f"unix:{sock}", "--region", "us-east-1"]
    party = Party(tmp_path, [*argv, "--nsm", nsm.address, "--ctx", "256", "--batch-size", "1"])
    try:
        _wait_for(sock.exists, party.proc, "the enclave")
        loaded = party.modules()
    finally:
        party.stop()
        nsm.stop()
    assert "nitro_llm.enclave.server" in loaded
    assert violations(loaded, forbidden_for("nitro_llm.enclave")) == []
