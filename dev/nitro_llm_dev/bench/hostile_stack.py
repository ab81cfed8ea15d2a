"""The local stack set up to be attacked: echo engine, short client timeouts, a breakable link.

Everything is the real thing — KMS emulator, enclave and gateway processes, isolated as in local
mode — except the engine (echo: instant, exact answers, so every fault is quick to provoke and every
answer can be checked word for word). A second gateway reaches the same enclave through a
:class:`~nitro_llm_dev.bench.faults.FaultProxy`, so the link can be stalled or cut mid-answer while the
stack's own gateway keeps its direct path.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm.gateway.auth import ClientLimits, add_client
from nitro_llm_dev.bench.faults import FaultProxy
from nitro_llm_dev.local.processes import ManagedProcess, StackError, cli_argv, wait_until
from nitro_llm_dev.local.stack import EnclaveOptions, LocalStack, free_port
from nitro_llm_dev.local.tampered import copy_code

HEADER_TIMEOUT = 2.0
BODY_TIMEOUT = 5.0
KEEP_ALIVE = 2


class HostileStack:
    def __init__(self, root: Path, *, header_timeout: float = HEADER_TIMEOUT) -> None:
        self.root = root
        self.header_timeout = header_timeout
        self.gateway_tmp = root / "gateway-tmp"
        """The gateways' TMPDIR: every temporary file they write lands here, for the leak scan."""
        self.stack = LocalStack(
            root=root,
            gateway_env={"TMPDIR": str(self.gateway_tmp)},
            enclave=EnclaveOptions(engine="echo"),
            enclave_from="source",  # the echo engine is development tooling: never in the image
            enclave_code=copy_code(root / "code"),
            gateway_args=[
                "--header-timeout",
                str(header_timeout),
                "--body-timeout",
                str(BODY_TIMEOUT),
                "--keep-alive-timeout",
                str(KEEP_ALIVE),
            ],
        )
        self.proxy: FaultProxy | None = None
        self.faulty: ManagedProcess | None = None
        self.faulty_url = ""
        self.started_at = 0.0

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> HostileStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def start(self) -> None:
        self.started_at = time.time()
        self.gateway_tmp.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.stack.start()
        fault_socket = self.stack.run_dir / "fault-proxy.sock"
        self.proxy = FaultProxy(f"unix:{fault_socket}", f"unix:{self.stack.enclave_socket}").start()
        port = free_port()
        self.faulty_url = f"http://127.0.0.1:{port}"
        self.faulty = ManagedProcess(
            "gateway-faulty-link",
            cli_argv(
                "gateway",
                "--enclave",
                f"unix:{fault_socket}",
                "--port",
                str(port),
                "--credentials-file",
                str(self.stack.enclave_role_file),
                "--api-tokens-file",
                str(self.stack.api_tokens_file),
                "--header-timeout",
                str(self.header_timeout),
            ),
            self.stack.logs / "gateway-faulty-link.log",
            env={"TMPDIR": str(self.gateway_tmp)},
        )
        self.faulty.start()
        self.wait_healthy(self.faulty_url, timeout=60, process=self.faulty)

    def stop(self) -> None:
        if self.faulty is not None:
            self.faulty.stop()
        if self.proxy is not None:
            self.proxy.stop()
        self.stack.stop()

    # -- clients ---------------------------------------------------------------------------------
    @property
    def gateway_url(self) -> str:
        return self.stack.gateway_url

    def client_config(self, token: str | None = None, *, faulty: bool = False) -> ClientConfig:
        config = self.stack.client_config()
        return dataclasses.replace(
            config,
            gateway_url=self.faulty_url if faulty else config.gateway_url,
            api_token=token if token is not None else config.api_token,
        )

    def conversation(self, token: str | None = None, *, faulty: bool = False, **kw: Any) -> KmsConversation:
        return KmsConversation(self.client_config(token, faulty=faulty), **kw)

    def issue_tokens(self, limits: dict[str, ClientLimits]) -> dict[str, str]:
        """New clients in the gateways' tokens file; returns once both gateways accept them."""
        tokens = {name: add_client(self.stack.api_tokens_file, name, lim) for name, lim in limits.items()}
        probe = next(iter(tokens.values()))
        for url in (self.gateway_url, self.faulty_url):

            def accepted(url: str = url) -> bool:
                # An empty body is refused as 400 only once the token itself is accepted.
                headers = {"authorization": f"Bearer {probe}"}
                return (
                    httpx.post(f"{url}/v1/infer", content=b"", headers=headers, timeout=5).status_code == 400
                )

            wait_until(accepted, what="the gateway to load new API tokens", timeout=30)
        return tokens

    # -- health ----------------------------------------------------------------------------------
    def wait_healthy(
        self, url: str | None = None, *, timeout: float = 60, process: ManagedProcess | None = None
    ) -> float:
        """Wait until the gateway says the enclave is up and holds credentials; returns seconds."""
        url = url or self.gateway_url
        started = time.monotonic()

        def ready() -> bool:
            try:
                health = httpx.get(f"{url}/healthz", timeout=2)
                stats = httpx.get(f"{url}/v1/enclave/stats", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return False
            return health.status_code == 200 and stats.get("has_credentials") is True

        wait_until(ready, what=f"{url} to be healthy", timeout=timeout, process=process)
        return time.monotonic() - started

    def enclave_stats(self) -> dict[str, Any]:
        return dict(httpx.get(f"{self.gateway_url}/v1/enclave/stats", timeout=5).json())

    def pid_getters(self) -> dict[str, Callable[[], int | None]]:
        """For samplers: each looks its pid up again, so a restarted process is followed."""

        def getter(name: str) -> Callable[[], int | None]:
            return lambda: self.pids()[name]

        return {name: getter(name) for name in self.pids()}

    def pids(self) -> dict[str, int | None]:
        procs = {
            "gateway": self.stack.gateway,
            "enclave": self.stack.enclave_proc,
            "kms-emulator": self.stack.kms,
            "gateway (faulty link)": self.faulty,
        }
        return {name: (p.pid if p is not None and p.alive() else None) for name, p in procs.items()}

    # -- faults ----------------------------------------------------------------------------------
    def kill(self, which: str) -> None:
        """SIGKILL the enclave or the KMS emulator (and everything in its process group)."""
        proc = {"enclave": self.stack.enclave_proc, "kms-emulator": self.stack.kms}[which]
        if proc is None or not proc.alive():
            raise StackError(f"{which} is not running")
        os.killpg(proc.pid, signal.SIGKILL)
        assert proc.proc is not None
        proc.proc.wait(timeout=10)
