"""Helpers for the KMS tests: emulated NSM documents and emulator processes."""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from nitro_llm.kms.client import make_kms_client
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

REPO = Path(__file__).resolve().parents[2]
REGION = "us-east-1"


def spki(key: rsa.RSAPrivateKey) -> bytes:
    return key.public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


def attest(
    ca: DevCA,
    pcrs: dict[int, bytes],
    key: rsa.RSAPrivateKey | None,
    *,
    debug: bool = False,
    at: dt.datetime | None = None,
    public_key: bytes | None = None,
) -> bytes:
    """A document from the emulated NSM, as the enclave would get it."""
    clock = (lambda: at) if at is not None else None
    with open_emulated_nsm(ca=ca, pcrs=pcrs, debug=debug, clock=clock) as nsm:
        return nsm.attest(public_key=public_key if public_key is not None else (spki(key) if key else None))


@dataclass
class EmulatorProcess:
    proc: subprocess.Popen[bytes]
    url: str
    state_dir: Path
    log_path: Path

    @property
    def credentials(self) -> dict[str, Any]:
        return json.loads((self.state_dir / "credentials.json").read_text())

    def client(self, who: str) -> Any:
        return make_kms_client(self.url, self.credentials[who], REGION)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=5)
        return self.proc.returncode


def start_emulator(state_dir: Path, log_path: Path, *extra: str) -> EmulatorProcess:
    """`nitro-llm kms-emulator` as a real process on 127.0.0.1, port 0, waiting for its port file."""
    port_file = state_dir.parent / f"{state_dir.name}.port"
    port_file.unlink(missing_ok=True)
    log = open(log_path, "ab")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "nitro_llm.cli.main",
            "kms-emulator",
            "--port",
            "0",
            "--state-dir",
            str(state_dir),
            "--port-file",
            str(port_file),
            "--region",
            REGION,
            *extra,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        cwd=REPO,
        env=env,
    )
    log.close()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip().isdigit():
            return EmulatorProcess(
                proc, f"http://127.0.0.1:{port_file.read_text().strip()}", state_dir, log_path
            )
        if proc.poll() is not None:
            raise AssertionError(f"kms-emulator exited with {proc.returncode}:\n{log_path.read_text()}")
        time.sleep(0.05)
    proc.kill()
    raise AssertionError(f"kms-emulator did not start:\n{log_path.read_text()}")
