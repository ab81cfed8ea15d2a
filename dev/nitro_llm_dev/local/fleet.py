"""A local fleet: N enclave + gateway replicas behind HAProxy, sharing one attested fleet key.

What ``nitro-llm up --replicas N`` runs, and what the fleet tests kill pieces of. Everything of the
single stack (local/stack.py) is kept: the KMS emulator, the data owner's key and its policy, the
measured PCRs (the same for every replica: same code, model and config), the client policy. Added:

- the fleet's own KMS key (``alias/nitro-llm-local-fleet``), measured into every replica's config
  (``--fleet-kms-key``), with the fleet key policy for those PCRs (nitro_llm/fleet/key_policy.py);
- the fleet key file (``fleet-key.json`` in the state directory), created once through KMS;
- per replica ``i``: an enclave serving in ``run/replica-i/`` (its own NSM emulator, its own vsock
  stand-in) and a gateway on its own port, handing that enclave its credentials and the fleet key;
- HAProxy on the port clients use, health-checking every gateway's ``/healthz``.

The client configuration points at the balancer and lets a turn be retried on another replica
(``failover_attempts``). The supervisor restarts any enclave or gateway that dies (a replacement, as
an Auto Scaling group would launch); ``supervisor.paused()`` keeps a killed one down.
"""

from __future__ import annotations

import dataclasses
import functools
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from nitro_llm.client.config import ClientConfig
from nitro_llm.fleet import operator
from nitro_llm.fleet.key_file import FleetKeyFile
from nitro_llm.fleet.key_policy import build_fleet_key_policy
from nitro_llm.gateway.auth import ClientLimits, add_client
from nitro_llm_dev.local.haproxy import Backend, Balancer
from nitro_llm_dev.local.image_enclave import share_with_enclave
from nitro_llm_dev.local.processes import (
    ManagedProcess,
    StackError,
    cli_argv,
    isolated_argv,
    network_isolation_available,
    wait_until,
)
from nitro_llm_dev.local.stack import (
    ENCLAVE_KMS_PORT,
    LOCAL_CLIENT,
    LOCAL_CLIENT_BURST,
    LOCAL_CLIENT_CONCURRENCY,
    LOCAL_CLIENT_RATE,
    LocalStack,
    free_port,
)
from nitro_llm_dev.local.supervisor import StackSupervisor
from nitro_llm_dev.nsm.server import NsmEmulatorServer

FLEET_KEY_ALIAS = "alias/nitro-llm-local-fleet"
FAILOVER_ATTEMPTS = 6
MAX_REPLICAS = 16


@dataclass
class Replica:
    """One enclave and the gateway in front of it, as one EC2 instance would run them."""

    index: int
    directory: Path  # the enclave's sockets (mounted at /run/nitro-llm for an image enclave)
    port: int
    enclave: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    nsm: NsmEmulatorServer | None = None

    @property
    def name(self) -> str:
        return f"replica-{self.index}"

    @property
    def gateway_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def enclave_socket(self) -> Path:
        return self.directory / "enclave.sock"

    @property
    def kms_relay_socket(self) -> Path:
        return self.directory / "kms-relay.sock"


@dataclass
class LocalFleet(LocalStack):
    replicas: int = 3
    enclave_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for every enclave process (e.g. the echo engine's per-piece delay)."""

    fleet: list[Replica] = field(default_factory=list)
    balancer: Balancer | None = None
    fleet_kms_key_arn: str = ""

    @property
    def fleet_key_file(self) -> Path:
        return self.root / "fleet-key.json"

    # -- lifecycle: the single stack's steps, each for N replicas ----------------------------------
    def start(self) -> None:
        if not 1 <= self.replicas <= MAX_REPLICAS:
            raise StackError(f"--replicas must be 1 to {MAX_REPLICAS}")
        supervise, self.supervise = self.supervise, False  # the single stack's supervisor watches one
        try:
            super().start()
        finally:
            self.supervise = supervise
        if supervise:
            self.supervisor = self._supervise()

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()
        if self.balancer is not None:
            self.balancer.stop()
        for replica in self.fleet:
            for proc in (replica.gateway, replica.enclave):
                if proc is not None:
                    proc.stop()
            if replica.nsm is not None:
                replica.nsm.stop()
        self.gateway = self.enclave_proc = None  # replica 0's, stopped above
        super().stop()  # the KMS emulator and the image hold

    def _before_measure(self) -> None:
        self._wait_kms()  # the fleet KMS key must exist first: its ARN is part of the measured config
        self._ensure_fleet_kms_key()

    def _ensure_fleet_kms_key(self) -> None:
        """The fleet's own KMS key, before the PCRs are measured: its ARN is part of the measured config."""
        kms = self.admin_kms()
        try:
            self.fleet_kms_key_arn = kms.describe_key(KeyId=FLEET_KEY_ALIAS)["KeyMetadata"]["Arn"]
        except kms.exceptions.NotFoundException:
            meta = kms.create_key(Description="nitro-llm local fleet key wrapper")["KeyMetadata"]
            kms.create_alias(AliasName=FLEET_KEY_ALIAS, TargetKeyId=meta["KeyId"])
            self.fleet_kms_key_arn = meta["Arn"]
        self.enclave.fleet_kms_key = self.fleet_kms_key_arn

    def _ensure_key(self) -> None:
        super()._ensure_key()
        self.progress("fleet key: policy bound to the measured PCRs, key generated inside KMS")
        creds = self.credentials()
        policy = build_fleet_key_policy(
            creds["account"],
            creds["admin"]["arn"],
            creds["enclave_role"]["arn"],
            {int(i): self.pcrs[str(i)] for i in (0, 1, 2)},
        )
        kms = self.admin_kms()
        kms.put_key_policy(KeyId=self.fleet_kms_key_arn, PolicyName="default", Policy=json.dumps(policy))
        if self.fleet_key_file.exists():
            keys = FleetKeyFile.load(self.fleet_key_file)
            if keys.kms_key_arn == self.fleet_kms_key_arn:
                return  # kept across restarts, as an operator keeps theirs
        operator.create(self.fleet_key_file, kms, self.fleet_kms_key_arn, replace=True)

    def _start_enclave(self) -> None:
        if not self.runs_image:
            self.isolated = network_isolation_available() if self.isolate is not False else False
            if self.isolate and not self.isolated:
                raise StackError(
                    "network isolation was required but 'unshare --net' is not permitted here",
                    hint="run as root (or with CAP_SYS_ADMIN), or pass --no-isolate",
                )
        else:
            self.isolated = True
        self.fleet = [Replica(i, self.run_dir / f"replica-{i}", free_port()) for i in range(self.replicas)]
        for replica in self.fleet:
            self.progress(f"{replica.name}: enclave")
            self._start_replica_enclave(replica)
        self.enclave_proc = self.fleet[0].enclave

    def _start_replica_enclave(self, replica: Replica) -> None:
        replica.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        for stale in ("enclave.sock", "nsm.sock", "kms-relay.sock"):
            (replica.directory / stale).unlink(missing_ok=True)
        log = self.logs / f"{replica.name}-enclave.log"
        if self.runs_image:
            assert self.enclave_image is not None
            replica.enclave, replica.nsm = self.start_image_enclave(
                f"{replica.name}-enclave",
                self.enclave_image,
                replica.directory,
                debug=self.enclave.debug_mode,
            )
            return
        replica.nsm = self.start_nsm(
            replica.name, self.pcrs, debug=self.enclave.debug_mode, path=replica.directory / "nsm.sock"
        )
        argv = cli_argv(
            "enclave",
            "serve",
            "--listen",
            f"unix:{replica.enclave_socket}",
            "--kms-endpoint",
            f"http://127.0.0.1:{ENCLAVE_KMS_PORT}",
            "--kms-forward-to",
            f"unix:{replica.kms_relay_socket}",
            "--region",
            self.region,
            "--nsm",
            replica.nsm.address,
            *self.enclave.args(),
            python_flags=self.enclave_code.python_flags if self.enclave_code else (),
        )
        replica.enclave = ManagedProcess(
            f"{replica.name}-enclave",
            isolated_argv(argv) if self.isolated else argv,
            log,
            env=self.enclave_env,
        )
        if self.enclave_code is not None:
            replica.enclave.env = {**self.enclave_code.env, **self.enclave_env}
            replica.enclave.cwd = self.enclave_code.cwd
        replica.enclave.start()

    def _start_gateway(self) -> None:
        limits = ClientLimits(LOCAL_CLIENT_RATE, LOCAL_CLIENT_BURST, LOCAL_CLIENT_CONCURRENCY)
        self.api_token = add_client(self.api_tokens_file, LOCAL_CLIENT, limits)
        balancer_port = self._port or free_port()  # the stack's chosen gateway port is the balancer's
        self.gateway_url = f"http://127.0.0.1:{balancer_port}"
        self.client_config().save(self.root / "client.json")  # before anything listens, as the stack does
        for replica in self.fleet:
            self.progress(f"{replica.name}: gateway (KMS relay, credentials and fleet key hand-off)")
            replica.gateway = ManagedProcess(
                f"{replica.name}-gateway",
                cli_argv(
                    "gateway",
                    "--enclave",
                    f"unix:{replica.enclave_socket}",
                    "--port",
                    str(replica.port),
                    "--kms-relay-listen",
                    f"unix:{replica.kms_relay_socket}",
                    "--kms-upstream",
                    "tcp:" + self.kms_url.removeprefix("http://"),
                    "--credentials-file",
                    str(self.enclave_role_file),
                    "--api-tokens-file",
                    str(self.api_tokens_file),
                    "--fleet-key-file",
                    str(self.fleet_key_file),
                    *self.gateway_args,
                ),
                self.logs / f"{replica.name}-gateway.log",
                env=self.gateway_env,
            )
            replica.gateway.start()
        if self.runs_image:  # each relay socket is its gateway's (root, 0600): hand it to its enclave
            for replica in self.fleet:
                wait_until(replica.kms_relay_socket.exists, what=f"{replica.name}'s KMS relay", timeout=60,
                           process=replica.gateway)  # fmt: skip
                share_with_enclave(replica.kms_relay_socket)
        self.gateway = self.fleet[0].gateway
        self.progress("HAProxy in front of the gateways, health-checking /healthz")
        self.balancer = Balancer(
            self.run_dir,
            balancer_port,
            [Backend(replica.name, replica.port) for replica in self.fleet],
            self.logs / "haproxy.log",
        )
        self.balancer.start()

    def _wait_ready(self) -> None:
        self.progress("waiting for every replica to hold the fleet key, and HAProxy to see it")
        for replica in self.fleet:
            wait_until(
                functools.partial(self._replica_healthy, replica),
                what=f"{replica.name} to be ready (fleet key held)",
                timeout=300,
                process=replica.enclave,
            )
        assert self.balancer is not None
        self.balancer.wait_all_up()

    @staticmethod
    def _replica_healthy(replica: Replica) -> bool:
        if replica.gateway is not None and not replica.gateway.alive():
            wait_until(lambda: False, what=f"{replica.name}'s gateway", timeout=0.1, process=replica.gateway)
        try:
            return httpx.get(f"{replica.gateway_url}/healthz", timeout=2).status_code == 200
        except httpx.HTTPError:
            return False

    def client_config(self) -> ClientConfig:
        # gateway_url is the balancer's; a turn cut by a lost replica is sent again
        return dataclasses.replace(super().client_config(), failover_attempts=FAILOVER_ATTEMPTS)

    # -- supervision: replace what dies ------------------------------------------------------------
    def _supervise(self) -> StackSupervisor:
        port = self.kms_url.rsplit(":", 1)[1]

        def same_kms_port(proc: ManagedProcess) -> None:
            argv = list(proc.argv)
            argv[argv.index("--port") + 1] = port
            proc.argv = argv

        supervisor = StackSupervisor()
        supervisor.watch("kms-emulator", lambda: self.kms, same_kms_port)
        for replica in self.fleet:
            supervisor.watch(f"{replica.name}-enclave", _current(replica, "enclave"))
            supervisor.watch(f"{replica.name}-gateway", _current(replica, "gateway"))
        return supervisor.start()

    def lost_processes(self) -> list[ManagedProcess]:
        given_up = set(self.supervisor.gave_up()) if self.supervisor else None
        procs = [self.kms, *(p for r in self.fleet for p in (r.enclave, r.gateway))]
        if self.balancer is not None:
            procs.append(self.balancer.process)
        lost = []
        for proc in procs:
            if proc is None or proc.alive():
                continue
            if given_up is None or proc.name in given_up or proc is (self.balancer and self.balancer.process):
                lost.append(proc)
        return lost


def _current(replica: Replica, role: str) -> Callable[[], ManagedProcess | None]:
    """What the supervisor watches: the replica's process of that role, as it is now."""
    return lambda: replica.enclave if role == "enclave" else replica.gateway
