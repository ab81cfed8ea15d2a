"""The whole system on one machine: KMS emulator, emulated enclave, gateway — real processes.

This is what `nitro-llm up`, `nitro-llm demo` and the end-to-end tests run. Each party is its own
process with its own view, as in a deployment. By default the enclave is the **enclave image**
(``image_enclave``): built from pinned inputs, run from its read-only root filesystem in its own
network (``lo`` only), mount and PID namespaces through the image's own command, and measured as
an EIF, so the PCRs the emulated NSM reports and the key policy pins are the image's. It reaches
the gateway through a Unix socket standing in for vsock and KMS only through the gateway's relay
standing in for vsock-proxy.

``enclave_from="source"`` runs ``nitro-llm enclave serve`` from this virtualenv instead, measured by
``nitro_llm_dev.nsm.measure`` (code tree, model, config): a developer's shortcut that skips the image
build, and the only way to run the development engines (``echo``), which the image does not hold.
"""

from __future__ import annotations

import json
import logging
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.enclave.boot import LOCAL_KMS_PORT
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.errors import NitroLLMError
from nitro_llm.kms.key_policy import build_key_policy
from nitro_llm_dev.kms_emulator.principals import CREDENTIALS_FILE, ENCLAVE_ROLE_FILE
from nitro_llm_dev.local.image_enclave import (
    EnclaveImage,
    ImageEnclaveProcess,
    ImageRequest,
    check_can_launch,
    ensure_image,
    hold_image,
    launch_argv,
    prepare_socket_dir,
    share_with_enclave,
)
from nitro_llm_dev.local.instance import (
    GatewayPortTaken,
    StackClaim,
    port_is_free,
    remember_port,
    remembered_port,
)
from nitro_llm_dev.local.processes import (
    ManagedProcess,
    StackError,
    cli_argv,
    isolated_argv,
    network_isolation_available,
    wait_until,
)
from nitro_llm_dev.local.startup import STARTUP_FILE, StartupTimings
from nitro_llm_dev.local.supervisor import StackSupervisor, lost_processes, supervise_stack
from nitro_llm_dev.local.tampered import CodeOverride
from nitro_llm_dev.nsm.server import NsmEmulatorServer

log = logging.getLogger("nitro_llm_dev.local")

KEY_ALIAS = "alias/nitro-llm-local"
LOCAL_CLIENT = "local-client"
LOCAL_CLIENT_RATE, LOCAL_CLIENT_BURST, LOCAL_CLIENT_CONCURRENCY = 100.0, 200, 32
ENCLAVE_KMS_PORT = LOCAL_KMS_PORT
"""Port of the in-enclave forwarder to KMS (inside the enclave's own network namespace)."""
ENCLAVE_SOURCES = ("image", "source")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class EnclaveOptions:
    engine: str = "llama"
    model: Path | None = None
    threads: int = 0  # 0: the enclave's own rule (nitro_llm/enclave/threads.py)
    ctx: int = 8192
    debug_mode: bool = False
    seed_compat: bool = False
    batch_size: int = 8
    max_waiting: int = 8
    fleet_kms_key: str | None = None  # a fleet replica (local/fleet.py): the KMS key wrapping the fleet key

    def config(self) -> EnclaveConfig:
        """The measured configuration ``nitro-llm enclave serve`` builds from ``args()``."""
        return EnclaveConfig(
            engine=self.engine,
            model_path=self.model,
            threads=self.threads,
            ctx=self.ctx,
            debug_mode=self.debug_mode,
            seed_compat=self.seed_compat,
            batch_size=self.batch_size,
            max_waiting=self.max_waiting,
            fleet_kms_key=self.fleet_kms_key,
        )

    def args(self) -> list[str]:
        out = ["--engine", self.engine, "--threads", str(self.threads), "--ctx", str(self.ctx)]
        out += ["--batch-size", str(self.batch_size), "--max-waiting", str(self.max_waiting)]
        if self.model:
            out += ["--model", str(self.model)]
        if self.debug_mode:
            out.append("--debug-mode")
        if self.seed_compat:
            out.append("--seed-compat")
        if self.fleet_kms_key:
            out += ["--fleet-kms-key", self.fleet_kms_key]
        return out


@dataclass
class LocalStack:
    root: Path
    enclave: EnclaveOptions = field(default_factory=EnclaveOptions)
    isolate: bool | None = None
    """None: isolate the enclave's network when the OS allows; True: require it; False: never."""
    region: str = "us-east-1"
    seed_route: bool = False
    """Open the gateway's seed-compatible POST / (the enclave then needs ``seed_compat``)."""
    supervise: bool = True
    """Restart the enclave and the KMS emulator when they die (local/supervisor.py)."""
    gateway_args: list[str] = field(default_factory=list)
    """Extra ``nitro-llm gateway`` flags (limits, timeouts)."""
    gateway_env: dict[str, str] = field(default_factory=dict)
    """Extra environment for the gateway process (e.g. a private TMPDIR to inspect)."""
    enclave_code: CodeOverride | None = None
    """Run (and measure) the enclave from this copy of the code: a frozen copy keeps a restarted
    enclave's PCRs unchanged while the working tree is edited (source-tree enclaves only)."""
    enclave_from: str = "image"
    """"image": the enclave image (built or reused from the cache); "source": the source tree."""
    image: EnclaveImage | None = None
    """Run this image (a derived one, in tests) instead of building one from ``enclave``."""
    progress: Callable[[str], None] = lambda _msg: None
    gateway_port: int | None = None
    """Serve the gateway on this loopback port (refused at start if taken). None: the port this state
    directory's last gateway used, so a restarted stack keeps its URL, or any free one if it is taken."""
    claim: StackClaim | None = None
    """The claim on ``root`` (instance.py), if the caller took it already: ``up`` takes it before this
    module loads, so a second ``up`` is refused before half a second of imports. Else ``start`` takes it."""

    kms: ManagedProcess | None = None
    enclave_proc: ManagedProcess | None = None
    gateway: ManagedProcess | None = None
    kms_url: str = ""
    gateway_url: str = ""
    pcrs: dict[str, str] = field(default_factory=dict)
    key_arn: str = ""
    isolated: bool = False
    api_token: str = field(default="", repr=False)
    supervisor: StackSupervisor | None = None
    nsm_server: NsmEmulatorServer | None = None
    enclave_image: EnclaveImage | None = None
    timings: StartupTimings = field(default_factory=StartupTimings)
    """The phases of the last ``start`` (startup.py)."""
    _image_hold: Any = None
    _port: int = 0

    # -- paths -----------------------------------------------------------------------------------
    @property
    def dev_ca_dir(self) -> Path:
        return self.root / "dev-ca"

    @property
    def kms_state(self) -> Path:
        return self.root / "kms"

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    @property
    def logs(self) -> Path:
        return self.root / "logs"

    @property
    def enclave_dir(self) -> Path:
        """The enclave's sockets (mounted at /run/nitro-llm inside an image enclave)."""
        return self.run_dir / "enclave"

    @property
    def enclave_socket(self) -> Path:
        return self.enclave_dir / "enclave.sock"

    @property
    def kms_relay_socket(self) -> Path:
        return self.enclave_dir / "kms-relay.sock"

    @property
    def runs_image(self) -> bool:
        return self.enclave_from == "image"

    def enclave_label(self) -> str:
        """What runs as the enclave, for ``up``/``demo`` output."""
        if self.runs_image:
            return "the enclave image: read-only root, own network, mount and PID namespaces"
        return "SOURCE TREE (developer option: this virtualenv's code, not the enclave image)"

    @property
    def credentials_file(self) -> Path:
        """Every principal's keys: for this stack's own set-up (admin) and its client files only."""
        return self.kms_state / CREDENTIALS_FILE

    @property
    def enclave_role_file(self) -> Path:
        """The enclave role's credentials alone: all the gateway is given, as on EC2."""
        return self.kms_state / ENCLAVE_ROLE_FILE

    @property
    def client_policy_path(self) -> Path:
        """The attested protocol's client policy, next to client.json (``--policy`` default)."""
        return self.root / "policy.json"

    def attestation_policy(self) -> ClientPolicy:
        from nitro_llm_dev.local.client_policy import local_policy

        return local_policy(self.pcrs, self.dev_ca_dir / "root.pem", self.enclave.model)

    def credentials(self) -> dict[str, Any]:
        return json.loads(self.credentials_file.read_text())

    # -- lifecycle -------------------------------------------------------------------------------
    def __enter__(self) -> LocalStack:
        try:
            self.start()
        except BaseException:
            self.stop()
            raise
        return self

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    @property
    def launched(self) -> bool:
        """Whether ``start`` got as far as starting a process (so ``stop`` has something to stop)."""
        return any(part is not None for part in (self.kms, self.enclave_proc, self.gateway, self.nsm_server))

    def start(self) -> None:
        """Start every process, in parallel where nothing orders them, and return once a question
        can be answered.

        The enclave is the slowest to get ready (its Python, then llama.cpp loading the model and
        allocating and zeroing its KV cache: most of a start), so it is launched as soon as its
        image and PCRs are known, and the rest happens while it loads: the KMS emulator, launched
        before the image check, comes up meanwhile; then the key policy (from the PCRs) and the
        gateway. The gateway is the enclave's only link to KMS and to clients, and starts only after
        the image was checked and the key policy rewritten for it. Each phase is timed
        (``timings``, saved in ``run/startup.json``; ``nitro-llm up --timings`` prints them).
        """
        timings = self.timings = StartupTimings()
        # First the claim, then the options, then anything else: a second stack in this state
        # directory, or one given bad options, must leave the running one's files alone (instance.py).
        with timings.phase("claim, options, ports"):
            if self.claim is None:
                self.claim = StackClaim(self.root)
            self.claim.acquire()
            self._check_options()
            self._check_enclave_from()
            self._port = self._choose_gateway_port()
            self.run_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            self.enclave_dir.mkdir(exist_ok=True, mode=0o700)
            for stale in (self.enclave_socket, self.kms_relay_socket, self.enclave_dir / "nsm.sock"):
                stale.unlink(missing_ok=True)
        with timings.phase("dev root CA"):
            self._ensure_dev_ca()
        kms_launched = timings.now()
        self._launch_kms()
        self._before_measure()
        if self.runs_image:
            with timings.phase("enclave image: cache key and check"):
                self.enclave_image = self._image()
                self.pcrs = self.enclave_image.pcr_hex()
        else:
            with timings.phase("enclave PCRs measured (source tree)"):
                self.pcrs = self.measure_pcrs(self.enclave, self.enclave_code)
        enclave_launched = timings.now()
        with timings.phase("enclave launched (and its NSM)"):
            self._start_enclave()
        self._wait_kms()
        timings.add("KMS emulator: launch to listening", kms_launched, timings.now())
        with timings.phase("key and key policy (PCRs)"):
            self._ensure_key()
        with timings.phase("gateway: launch to relay listening"):
            self._start_gateway()
        with timings.phase("waiting: enclave ready, credentials, health"):
            self._wait_ready()
        timings.add_enclave_log(self.logs / "enclave.log", enclave_launched)
        if self.supervise:
            self.supervisor = supervise_stack(self)
        self.attestation_policy().save(self.client_policy_path)
        remember_port(self.root, self._port)  # served and ready: the address to come back to
        self.claim.record(gateway_url=self.gateway_url)
        timings.save(self.run_dir / STARTUP_FILE)

    def stop(self) -> None:
        if self.supervisor is not None:
            self.supervisor.stop()  # first, or it would restart what we are stopping
        for proc in (self.gateway, self.enclave_proc, self.kms):
            if proc is not None:
                proc.stop()
        if self.nsm_server is not None:
            self.nsm_server.stop()
        if self._image_hold is not None:
            self._image_hold.close()
            self._image_hold = None
        if self.claim is not None:
            self.claim.release()  # last: until every process is down, the state is still in use

    # -- steps -----------------------------------------------------------------------------------
    def _check_enclave_from(self) -> None:
        """Refuse, before starting anything, what the image cannot run."""
        if self.enclave_from not in ENCLAVE_SOURCES:
            raise StackError(f"enclave_from must be one of {', '.join(ENCLAVE_SOURCES)}")
        if not self.runs_image:
            if self.image is not None:
                raise StackError("an image was given to a source-tree stack", hint="set enclave_from='image'")
            return
        if self.enclave.engine != "llama":
            raise StackError(
                f"the enclave image holds only the product's llama engine, not {self.enclave.engine!r}",
                hint="development engines run from the source tree: pass --enclave-from source",
            )
        if self.enclave_code is not None:
            raise StackError("a code override runs the source tree", hint="set enclave_from='source'")
        if self.isolate is False:
            raise StackError(
                "the enclave image always runs in its own namespaces",
                hint="pass --enclave-from source to run a source-tree enclave without isolation",
            )
        check_can_launch()

    def _check_options(self) -> None:
        """Refuse, before starting anything, options the enclave would only refuse once started."""
        from nitro_llm.enclave.engines import installed_engines

        engines = installed_engines()
        if self.enclave.engine not in engines:
            raise StackError(
                f"no enclave engine named {self.enclave.engine[:40]!r}",
                hint=f"pass --engine with one of: {', '.join(engines)}",
            )
        model = self.enclave.model
        if model is not None and not model.is_file():
            raise StackError(
                f"no model file at {model}",
                hint="pass --model the path of a GGUF file, or leave it out for the default model",
            )
        if self.gateway_port is not None and not port_is_free(self.gateway_port):
            raise GatewayPortTaken(f"something already listens on 127.0.0.1:{self.gateway_port}")

    def _choose_gateway_port(self) -> int:
        if self.gateway_port is not None:
            return self.gateway_port
        last = remembered_port(self.root)
        if last is not None and port_is_free(last):
            return last
        if last is not None:
            self.progress(f"the last gateway port ({last}) is taken: using another")
        return free_port()

    def _image(self) -> EnclaveImage:
        """The image to run: the given one, or the build for these options (cached by content)."""
        image = self.image
        if image is None:
            request = ImageRequest(self.enclave.config(), region=self.region, model=self.enclave.model)
            image = ensure_image(request, progress=self.progress)
        self._image_hold = hold_image(image)  # keeps the build from being pruned while it runs
        return image

    def start_image_enclave(
        self, name: str, image: EnclaveImage, socket_dir: Path, *, debug: bool = False
    ) -> tuple[ImageEnclaveProcess, NsmEmulatorServer]:
        """Start ``image`` as an enclave serving in ``socket_dir`` (mounted at /run/nitro-llm), with an
        emulated NSM reporting the image's PCRs. The caller provides ``socket_dir/kms-relay.sock``
        (``share_with_enclave`` it) and stops both after use."""
        prepare_socket_dir(socket_dir)
        nsm = self.start_nsm(name, image.pcr_hex(), debug=debug, path=socket_dir / "nsm.sock")
        share_with_enclave(nsm.path)
        proc = ImageEnclaveProcess(name, launch_argv(image, socket_dir), self.logs / f"{name}.log")
        proc.start()
        return proc, nsm

    def _ensure_dev_ca(self) -> None:
        from nitro_llm_dev.nsm.devca import DevCA

        self.progress("dev root CA (created once, kept in the state dir)")
        ca = DevCA.load_or_create(self.dev_ca_dir)
        self.dev_root_pem = self.dev_ca_dir / "root.pem"
        if not self.dev_root_pem.exists():
            from cryptography.hazmat.primitives.serialization import Encoding

            self.dev_root_pem.write_bytes(ca.root_certificate.public_bytes(Encoding.PEM))

    @property
    def _kms_port_file(self) -> Path:
        return self.run_dir / "kms.port"

    def _launch_kms(self) -> None:
        """Start the KMS emulator; ``_wait_kms`` waits for it to listen (meanwhile, other work)."""
        self.progress("KMS emulator")
        port_file = self._kms_port_file
        port_file.unlink(missing_ok=True)
        self.kms = ManagedProcess(
            "kms-emulator",
            cli_argv(
                "kms-emulator",
                "--port",
                "0",
                "--state-dir",
                str(self.kms_state),
                "--trust-root",
                str(self.dev_root_pem),
                "--port-file",
                str(port_file),
                "--region",
                self.region,
            ),
            self.logs / "kms-emulator.log",
        )
        self.kms.start()

    def _before_measure(self) -> None:
        """What the measured configuration needs before the image or PCRs are made: nothing for one
        stack; a fleet creates its fleet KMS key here, whose ARN is measured (local/fleet.py)."""

    def _wait_kms(self) -> None:
        port_file = self._kms_port_file
        wait_until(
            lambda: port_file.exists() and port_file.read_text().strip().isdigit(),
            what="the KMS emulator to listen",
            timeout=30,
            process=self.kms,
        )
        self.kms_url = f"http://127.0.0.1:{port_file.read_text().strip()}"

    def measure_pcrs(self, options: EnclaveOptions, code: CodeOverride | None = None) -> dict[str, str]:
        """The PCRs of the enclave these options start: its code tree (a copy, or this install), model
        and config, measured here as the hypervisor measures an image before it boots."""
        from nitro_llm_dev.nsm.measure import measure_config

        self.progress("measuring the enclave (code, model, config) into PCRs")
        code_root = code.cwd / "nitro_llm" if code is not None else None
        try:
            measured = measure_config(options.config(), code_root)
        except NitroLLMError as exc:
            raise StackError(f"measuring the enclave failed: {exc.message}", hint=exc.hint) from None
        return {str(index): value.hex() for index, value in sorted(measured.items())}

    def start_nsm(
        self, name: str, pcrs: dict[str, str], *, debug: bool = False, path: Path | None = None
    ) -> NsmEmulatorServer:
        """The emulated NSM for one enclave, on a Unix socket outside it, reporting ``pcrs``."""
        from nitro_llm_dev.nsm import emulated_transport

        path = path or self.run_dir / f"{name}-nsm.sock"
        path.unlink(missing_ok=True)
        transport = emulated_transport(
            ca_path=self.dev_ca_dir,
            pcrs={int(index): bytes.fromhex(value) for index, value in pcrs.items()},
            debug=debug,
        )
        return NsmEmulatorServer(transport, path).start()

    def prepare_enclave(
        self, name: str, options: EnclaveOptions, listen: Path, code: CodeOverride | None = None
    ) -> tuple[list[str], NsmEmulatorServer, dict[str, str]]:
        """Measure an enclave (these options, this code), start its NSM, and give its argv.

        The caller starts the process and stops the NSM server after it.
        """
        pcrs = self.measure_pcrs(options, code)
        nsm = self.start_nsm(name, pcrs, debug=options.debug_mode)
        return self.enclave_argv(options, listen, nsm, code), nsm, pcrs

    def admin_kms(self) -> Any:
        # Imported here, as the gateway's token file below: boto3 and FastAPI take a third of a
        # second to import, which 'up' would spend before launching the enclave, not while it loads.
        from nitro_llm.kms.client import make_kms_client

        return make_kms_client(self.kms_url, self.credentials()["admin"], self.region)

    def _ensure_key(self) -> None:
        """Create the data owner's key once; on every start, rewrite its policy from the PCRs just
        measured, as an operator would after a new enclave build."""
        self.progress("key and key policy bound to the measured PCRs")
        creds = self.credentials()
        policy = build_key_policy(
            account=creds["account"],
            admin_arn=creds["admin"]["arn"],
            client_arns=[creds["client"]["arn"]],
            enclave_role_arn=creds["enclave_role"]["arn"],
            pcrs={int(i): self.pcrs[str(i)] for i in (0, 1, 2)},
        )
        kms = self.admin_kms()
        try:
            self.key_arn = kms.describe_key(KeyId=KEY_ALIAS)["KeyMetadata"]["Arn"]
            kms.put_key_policy(KeyId=self.key_arn, PolicyName="default", Policy=json.dumps(policy))
        except kms.exceptions.NotFoundException:
            meta = kms.create_key(Policy=json.dumps(policy), Description="nitro-llm local data owner key")[
                "KeyMetadata"
            ]
            kms.create_alias(AliasName=KEY_ALIAS, TargetKeyId=meta["KeyId"])
            self.key_arn = meta["Arn"]
        self.policy = policy

    def enclave_argv(
        self, options: EnclaveOptions, listen: Path, nsm: NsmEmulatorServer, code: CodeOverride | None = None
    ) -> list[str]:
        return cli_argv(
            "enclave",
            "serve",
            "--listen",
            f"unix:{listen}",
            "--kms-endpoint",
            f"http://127.0.0.1:{ENCLAVE_KMS_PORT}",
            "--kms-forward-to",
            f"unix:{self.kms_relay_socket}",
            "--region",
            self.region,
            "--nsm",
            nsm.address,
            *options.args(),
            python_flags=code.python_flags if code else (),
        )

    def _start_enclave(self) -> None:
        if self.runs_image:
            assert self.enclave_image is not None
            self.isolated = True
            self.progress("enclave image (own network, mount and PID namespaces: lo only, read-only root)")
            self.enclave_proc, self.nsm_server = self.start_image_enclave(
                "enclave", self.enclave_image, self.enclave_dir, debug=self.enclave.debug_mode
            )
            return
        if self.isolate is False:
            self.isolated = False
        else:
            self.isolated = network_isolation_available()
            if self.isolate and not self.isolated:
                raise StackError(
                    "network isolation was required but 'unshare --net' is not permitted here",
                    hint="run as root (or with CAP_SYS_ADMIN), or pass --no-isolate",
                )
        self.progress(
            "enclave from the SOURCE TREE (developer option)"
            + (" (own network namespace: loopback only)" if self.isolated else " (NOT network-isolated)")
        )
        self.nsm_server = self.start_nsm(
            "enclave", self.pcrs, debug=self.enclave.debug_mode, path=self.enclave_dir / "nsm.sock"
        )
        argv = self.enclave_argv(self.enclave, self.enclave_socket, self.nsm_server, self.enclave_code)
        self.enclave_proc = ManagedProcess(
            "enclave", isolated_argv(argv) if self.isolated else argv, self.logs / "enclave.log"
        )
        if self.enclave_code is not None:
            self.enclave_proc.env = self.enclave_code.env
            self.enclave_proc.cwd = self.enclave_code.cwd
        self.enclave_proc.start()

    def _start_gateway(self) -> None:
        self.progress("gateway (HTTP, KMS relay, credentials hand-off)")
        # The gateway requires API tokens, as an exposed one must; this stack's client gets one.
        from nitro_llm.gateway.auth import ClientLimits, add_client

        limits = ClientLimits(
            rate_per_second=LOCAL_CLIENT_RATE,
            burst=LOCAL_CLIENT_BURST,
            max_concurrent=LOCAL_CLIENT_CONCURRENCY,
        )
        self.api_token = add_client(self.api_tokens_file, LOCAL_CLIENT, limits)
        port = self._port or free_port()
        self.gateway_url = f"http://127.0.0.1:{port}"
        # Written before the gateway listens: whoever follows this file (a running 'nitro-llm proxy')
        # must not meet the new gateway with the last stack's token, which it refuses as unauthorized.
        self.client_config().save(self.root / "client.json")
        self.gateway = ManagedProcess(
            "gateway",
            cli_argv(
                "gateway",
                "--enclave",
                f"unix:{self.enclave_socket}",
                "--port",
                str(port),
                "--kms-relay-listen",
                f"unix:{self.kms_relay_socket}",
                "--kms-upstream",
                "tcp:" + self.kms_url.removeprefix("http://"),
                "--credentials-file",
                str(self.enclave_role_file),
                *(["--seed-route"] if self.seed_route else []),
                "--api-tokens-file",
                str(self.api_tokens_file),
                *self.gateway_args,
            ),
            self.logs / "gateway.log",
            env=self.gateway_env,
        )
        self.gateway.start()
        if self.runs_image:  # the relay socket is the gateway's (root, 0600): hand it to the enclave
            wait_until(self.kms_relay_socket.exists, what="the gateway's KMS relay", timeout=60,
                       process=self.gateway)  # fmt: skip
            share_with_enclave(self.kms_relay_socket)

    def _wait_ready(self) -> None:
        self.progress("waiting for the enclave to load the model and take its credentials")

        def healthy() -> bool:
            assert self.gateway is not None
            if not self.gateway.alive():  # the wait watches the enclave; fail early on the gateway too
                wait_until(lambda: False, what="the stack to be ready", timeout=0.1, process=self.gateway)
            try:
                r = httpx.get(f"{self.gateway_url}/healthz", timeout=2)
                stats = httpx.get(f"{self.gateway_url}/v1/enclave/stats", timeout=2).json()
            except (httpx.HTTPError, ValueError):
                return False
            return r.status_code == 200 and bool(stats.get("has_credentials", True))

        for proc in (self.enclave_proc, self.gateway, self.kms):
            assert proc is not None
            if not proc.alive():
                wait_until(lambda: False, what="start-up", timeout=0.1, process=proc)
        wait_until(
            healthy, what="the gateway and enclave to be ready", timeout=300, process=self.enclave_proc
        )

    def client_config(self) -> ClientConfig:
        creds = self.credentials()["client"]
        return ClientConfig(
            gateway_url=self.gateway_url,
            key_id=KEY_ALIAS,
            region=self.region,
            kms_endpoint=self.kms_url,
            credentials={k: v for k, v in creds.items() if k != "arn"},
            api_token=self.api_token or None,
        )

    @property
    def api_tokens_file(self) -> Path:
        return self.root / "api-tokens.json"

    def lost_processes(self) -> list[ManagedProcess]:
        """Processes that died and will not be restarted (all dead ones when not supervised)."""
        return lost_processes(self, self.supervisor)
