"""The supervisor's hands and eyes on a real host: nitro-cli for the enclave, the gateway's /healthz.

``describe`` reads nitro-cli's ``describe-enclaves`` JSON (a list of objects with ``EnclaveName``,
``EnclaveID``, ``State`` and ``Flags``, as nitro-cli's ``EnclaveDescribeInfo`` serialises them).
``start`` checks the installed EIF against its manifest, then runs it in production mode: the argv
comes from ``nitro_cli.run_enclave_argv`` without ``debug_mode``, so no console is ever attached.
``health`` asks the gateway on loopback over its own TLS, verified against its certificate.
"""

from __future__ import annotations

import json
import logging
import ssl
from typing import Any

import httpx

from nitro_llm.deploy import eif_check, nitro_cli, runner
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import SupervisorError
from nitro_llm.deploy.supervisor import ENCLAVE_UNHEALTHY, GATEWAY_UNREACHABLE, HEALTHY, Health, Listing
from nitro_llm.transport.address import is_loopback_host

log = logging.getLogger("nitro_llm.deploy.supervisor")

NITRO_CLI_TIMEOUT = 120.0
"""run-enclave waits for the enclave's heartbeat; a hung nitro-cli must not hang the supervisor."""


def parse_listing(text: str, name: str) -> Listing:
    try:
        enclaves: Any = json.loads(text or "[]")
    except ValueError:
        raise SupervisorError("nitro-cli describe-enclaves did not print JSON") from None
    if not isinstance(enclaves, list):
        raise SupervisorError("nitro-cli describe-enclaves did not print a list")
    for enclave in enclaves:
        if isinstance(enclave, dict) and enclave.get("EnclaveName") == name:
            return Listing(
                running=enclave.get("State") == "RUNNING",
                debug_mode="DEBUG_MODE" in str(enclave.get("Flags", "")),
                enclave_id=str(enclave.get("EnclaveID", "")),
            )
    return Listing(running=False)


def health_url(cfg: DeployConfig) -> str:
    """The gateway's /healthz as seen from the host itself: loopback when it listens on all
    addresses or on loopback, https when it has a certificate."""
    host = cfg.gateway.host
    if host in ("0.0.0.0", "::", "") or is_loopback_host(host):
        host = "::1" if host == "::" else "127.0.0.1"
    scheme = "https" if cfg.gateway.tls_cert is not None else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{cfg.gateway.port}/healthz"


class NitroCliControl:
    def __init__(self, cfg: DeployConfig) -> None:
        self._cfg = cfg
        self._url = health_url(cfg)

    def describe(self) -> Listing:
        out = runner.run(nitro_cli.describe_enclaves_argv(), capture_stdout=True, timeout=NITRO_CLI_TIMEOUT)
        return parse_listing(out, self._cfg.enclave.name)

    def start(self) -> str:
        cfg = self._cfg
        eif_check.check_installed(cfg)
        nitro_cli.check_enclave_memory(cfg.enclave.memory_mib, cfg.path(cfg.enclave.eif).stat().st_size)
        out = runner.run(nitro_cli.run_enclave_argv(cfg), capture_stdout=True, timeout=NITRO_CLI_TIMEOUT)
        try:
            return str(json.loads(out).get("EnclaveID", ""))
        except (ValueError, AttributeError):
            return ""

    def terminate(self) -> None:
        argv = nitro_cli.terminate_enclave_argv(self._cfg)
        runner.run(argv, capture_stdout=True, timeout=NITRO_CLI_TIMEOUT)

    def health(self) -> Health:
        timeout = self._cfg.supervisor.health_timeout
        cert = self._cfg.gateway.tls_cert
        try:
            # Read each time: 'deploy gateway-files' may have renewed the certificate.
            verify = ssl.create_default_context(cafile=self._cfg.path(cert)) if cert is not None else True
            reply = httpx.get(self._url, verify=verify, timeout=timeout)
        except (OSError, ssl.SSLError) as exc:
            why = f"cannot read the gateway's certificate ({type(exc).__name__})"
            return Health(GATEWAY_UNREACHABLE, why)
        except httpx.HTTPError as exc:
            return Health(GATEWAY_UNREACHABLE, f"{self._url}: {type(exc).__name__}")
        try:
            enclave = str(reply.json().get("enclave", "?"))
        except (ValueError, AttributeError):
            return Health(GATEWAY_UNREACHABLE, f"{self._url} answered {reply.status_code} without JSON")
        if reply.status_code == 200 and enclave == "ok":
            return Health(HEALTHY)
        return Health(ENCLAVE_UNHEALTHY, f"gateway says enclave={enclave}")
