"""Assemble and run the enclave process from its configuration.

Start-up order matters: check and measure the model, load the engine, open the NSM, start the
in-enclave KMS forwarder, and only then listen, so that the socket appearing means "ready".
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import threading
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from nitro_llm.attestation.nsm import Nsm
from nitro_llm.enclave.attested_handler import AttestedHandler, config_digest
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.engines import build_engine
from nitro_llm.enclave.fleet_key import FleetAttestedHandler
from nitro_llm.enclave.hardening import harden_process
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.enclave.trusted_clock import TrustedClock
from nitro_llm.errors import ConfigError
from nitro_llm.inference.model import check_model
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS
from nitro_llm.protocol.frame_kinds import Credentials
from nitro_llm.transport import close_listener, listen
from nitro_llm.transport.relay import Relay

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KmsSettings:
    endpoint: str | None  # None: the real AWS endpoint for the region
    region: str
    forward_to: str | None = None  # the gateway's relay, reached from inside the enclave


_KMS_HOSTNAME = re.compile(r"kms(-fips)?\.[a-z]{2}(-[a-z]+)+-\d\.amazonaws\.com(\.cn)?")


def forwarder_listen_address(endpoint: str) -> str:
    """The loopback TCP address boto3 will connect to for ``endpoint``.

    Locally that is ``http://127.0.0.1:PORT``. On Nitro it is the real KMS name
    (``https://kms.<region>.amazonaws.com``), which the enclave's /etc/hosts maps to 127.0.0.1 so that
    TLS runs end to end to KMS and is checked against KMS's real certificate name; the forwarder then
    listens on 127.0.0.1:443.
    """
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if parts.scheme not in ("http", "https") or not (
        host in ("127.0.0.1", "localhost") or _KMS_HOSTNAME.fullmatch(host)
    ):
        raise ConfigError(
            "with --kms-forward-to, --kms-endpoint must be http(s)://127.0.0.1:PORT or "
            "https://kms.<region>.amazonaws.com",
            hint="the forwarder listens on the enclave's loopback, the only interface it has",
        )
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"tcp:127.0.0.1:{port}"


def check_kms_name_is_local(endpoint: str) -> None:
    """A KMS hostname endpoint only works through the forwarder if it resolves to loopback inside
    the enclave; fail at start-up with the fix rather than at the first request."""
    host = urlsplit(endpoint).hostname or ""
    if host in ("127.0.0.1", "localhost"):
        return
    try:
        resolved = socket.gethostbyname(host)
    except OSError:
        resolved = ""
    if resolved != "127.0.0.1":
        raise ConfigError(
            f"{host} does not resolve to 127.0.0.1 inside the enclave",
            hint=f"add '127.0.0.1 {host}' to /etc/hosts (the image's init does this)",
        )


def open_key_release(kms: KmsSettings, nsm: Any) -> KeyRelease:
    from nitro_llm.kms.client import make_kms_client
    from nitro_llm.kms.cms import open_enveloped_data

    def factory(credentials: Credentials) -> Any:
        # one attempt per call: KeyRelease's RetryPolicy is the only layer that retries
        return make_kms_client(kms.endpoint, credentials.to_boto(), kms.region, single_attempt=True)

    return KeyRelease(nsm=nsm, kms_client_factory=factory, open_envelope=open_enveloped_data)


def serve(
    config: EnclaveConfig,
    *,
    listen_address: str,
    kms: KmsSettings,
    nsm: Nsm,
    stop: threading.Event | None = None,
) -> None:
    """Run until SIGTERM/SIGINT (or ``stop`` is set).

    ``nsm`` is the one NSM seam (``/dev/nsm`` on Nitro, a socket to local mode's emulator); the
    enclave reads its own PCR0-2 from it for health output, as it would from the device.
    """
    stop = stop or threading.Event()
    hardening = harden_process()  # before any key, credential or question exists in this process
    model = check_model(config.model_path)  # its SHA-256 is the attested descriptor's model digest
    engine = build_engine(config, model)
    pcrs = {index: nsm.describe_pcr(index).data for index in (0, 1, 2)}
    if nsm.kind != "device":
        log.warning(
            "NSM over a socket (%s): local mode only, documents are not from Nitro hardware", nsm.kind
        )
    relay = None
    if kms.forward_to:
        check_kms_name_is_local(kms.endpoint or "")
        # bounded like vsock-proxy's workers (nitro_llm/kms/connections.py)
        relay = Relay(
            forwarder_listen_address(kms.endpoint or ""), kms.forward_to, max_connections=MAX_KMS_CONNECTIONS
        ).start()
    key_release = open_key_release(kms, nsm)
    seed = None
    if config.seed_compat:
        from nitro_llm.enclave.seed_compat import SeedHandler
        from nitro_llm.kms.client import make_kms_client

        log.warning("seed-compatible wire format enabled: weaker (client credentials pass the parent)")
        seed = SeedHandler(
            release=key_release,
            kms_client_for=lambda creds: make_kms_client(
                kms.endpoint, creds.to_boto(), kms.region, single_attempt=True
            ),
            region=kms.region,
        )
    attested: AttestedHandler | FleetAttestedHandler
    if config.fleet_kms_key:  # a fleet replica: the shared key, from KMS, once the gateway sends it
        attested = FleetAttestedHandler(
            nsm,
            key_release,
            kms_key_arn=config.fleet_kms_key,
            model_digest=model.sha256,
            config_digest=config_digest(config.measured()),
        )
    else:
        attested = AttestedHandler.generate(
            nsm, model_digest=model.sha256, config_digest=config_digest(config.measured())
        )
    server = EnclaveServer(
        engine=engine,
        key_release=key_release,
        config=config,
        pcrs=pcrs,
        clock_ms=TrustedClock(nsm).now_ms,  # freshness by the NSM's clock, not the drifting local one
        seed=seed,
        attested=attested,
        hardening=hardening.to_dict(),
    )
    listener = listen(listen_address)
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda *_: stop.set())
    server.start(listener)
    log.info("enclave listening on %s (engine=%s, nsm=%s)", listen_address, config.engine, nsm.kind)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        server.stop()
        close_listener(listener, listen_address)
        if relay:
            relay.stop()
        nsm.close()
        log.info("enclave stopped")
