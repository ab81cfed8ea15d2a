"""The deployment config: one TOML file that every ``nitro-llm deploy`` command reads, so the CPU
and memory in allocator.yaml, the run-enclave flags, the enclave's vsock port and the gateway's
systemd unit cannot drift apart.

Unknown keys are refused (a typo like ``memroy_mib`` must not silently fall back to a default), and
relative paths are taken from the config file's own folder so a command means the same thing from
any working directory.
"""

from __future__ import annotations

import re
import tomllib
from pathlib import Path
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from nitro_llm.deploy.errors import DeployConfigError
from nitro_llm.enclave.boot import PARENT_CID as PARENT_CID  # the parent's vsock CID (3), re-exported
from nitro_llm.fleet.key_file import check_kms_key_arn
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS
from nitro_llm.transport.address import is_loopback_host

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")
_S3_OBJECT = re.compile(r"s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]/[A-Za-z0-9!_.*'()/-]+")

Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnclaveSection(_Section):
    cpu_count: int = Field(2, ge=2, description="vCPUs given to the enclave (x86: at least 2, whole cores)")
    memory_mib: int = Field(4096, ge=64, description="MiB given to the enclave; at least 4x the EIF size")
    cid: int = Field(16, ge=4, le=0xFFFFFFFE, description="the enclave's vsock CID (0-3 are reserved)")
    port: Port = Field(5000, description="vsock port the enclave serves on")
    eif: Path = Path("../build/nitro-llm.eif")
    manifest: Path = Path("../build/manifest.json")
    """The published manifest the EIF is checked against before every 'nitro-cli run-enclave'."""
    image: str = "nitro-llm-enclave:latest"
    name: str = "nitro-llm"
    # No longer read by any command: the image measures them ('nitro-llm image build --threads --ctx').
    # Still accepted so that existing configs load.
    threads: int | None = Field(None, ge=1, description="inference threads; default: cpu_count")
    ctx: int = Field(2048, ge=256)


class BuildSection(_Section):
    image_dir: Path = Path("../build/image")
    """The output of ``nitro-llm image build`` (rootfs.tar, manifest.json) that 'deploy build-eif'
    hands to nitro-cli through ``docker import``."""
    measurements: Path = Path("../build/measurements.json")
    signing_certificate: Path | None = None
    signing_key: Path | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_dockerfile(cls, data: Any) -> Any:
        if isinstance(data, dict) and {"dockerfile", "context"} & data.keys():
            raise ValueError(
                "dockerfile and context are gone: the image is built by 'nitro-llm image build OUT' "
                "(set image_dir = OUT, or remove both keys)"
            )
        return data


class KmsProxySection(_Section):
    port: Port = Field(8000, description="vsock port vsock-proxy listens on, on the parent (CID 3)")
    workers: int = Field(
        MAX_KMS_CONNECTIONS,
        ge=MAX_KMS_CONNECTIONS,
        le=64,
        description="simultaneous connections vsock-proxy relays; each holds a worker for its whole life, so "
        "fewer than the enclave's KMS connections would stall a TLS handshake (nitro_llm/kms/connections.py)",
    )
    allowlist: Path = Path("/etc/nitro_enclaves/nitro-llm-vsock-proxy.yaml")
    binary: Path = Path("/usr/bin/vsock-proxy")


GATEWAY_DIR = Path("/etc/nitro-llm/gateway")
"""The gateway's own files (tokens, TLS key and certificate), in a folder its user owns: the user
replaces the tokens file by renaming a new one into place, so it must be able to write beside it."""


class GatewaySection(_Section):
    host: str = "0.0.0.0"
    port: Port = 8080
    user: str = "nitro-llm"
    nitro_llm: Path = Path("/opt/nitro-llm/venv/bin/nitro-llm")
    api_tokens_file: Path | None = GATEWAY_DIR / "api-tokens.json"
    """Bearer tokens of the clients allowed to call the gateway (`nitro-llm gateway-token FILE NAME`).
    Only None on a loopback-only gateway: an exposed gateway without tokens serves anyone."""
    tls_cert: Path | None = GATEWAY_DIR / "tls.crt"
    tls_key: Path | None = GATEWAY_DIR / "tls.key"
    """The gateway's TLS certificate and key ('nitro-llm deploy gateway-files' makes a self-signed
    pair; clients pin the certificate). Only None on a loopback-only gateway: off loopback, tokens and
    traffic metadata would cross the network in clear."""

    @model_validator(mode="after")
    def _exposed_needs_tokens_and_tls(self) -> GatewaySection:
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ValueError("tls_cert and tls_key go together")
        if not is_loopback_host(self.host):
            missing = [
                name
                for name, value in (("api_tokens_file", self.api_tokens_file), ("tls_cert", self.tls_cert))
                if value is None
            ]
            if missing:
                raise ValueError(
                    f"a gateway on {self.host} (not loopback) needs {' and '.join(missing)}: without "
                    "tokens it serves anyone, without TLS tokens cross the network in clear"
                )
        return self


class SupervisorSection(_Section):
    """How 'nitro-llm deploy supervise' keeps the enclave running: it looks every ``interval``
    seconds (nitro-cli describe-enclaves, then the gateway's /healthz), restarts an enclave that is
    gone, and one whose health has failed for ``unhealthy_after`` seconds once ``boot_grace`` has
    passed since its start (the model loads first). Restarts back off from ``backoff_initial`` to
    ``backoff_max`` seconds, doubling, until the enclave has stayed healthy for ``healthy_reset``."""

    interval: float = Field(10.0, gt=0, le=3600)
    boot_grace: float = Field(180.0, ge=0)
    unhealthy_after: float = Field(60.0, ge=0)
    backoff_initial: float = Field(5.0, gt=0)
    backoff_max: float = Field(300.0, gt=0)
    healthy_reset: float = Field(600.0, ge=0)
    health_timeout: float = Field(5.0, gt=0, le=60)


class FleetSection(_Section):
    """A fleet replica (the attested protocol behind a load balancer): its gateway hands the enclave the
    wrapped fleet key file, and its image was built with the fleet KMS key's ARN. Absent: the enclave
    makes its own session keys (one instance, or the kms protocol only)."""

    kms_key_arn: str
    """The fleet KMS key's ARN, exactly as the image was built with it ('nitro-llm image build
    --fleet-kms-key'): 'deploy install-eif' and every enclave start refuse a manifest measured with
    another (or none), since that enclave could never open this fleet's key."""
    key_file: Path = Path("/etc/nitro-llm/fleet-key.json")
    """The wrapped fleet key file (KMS ciphertext only), passed to the gateway as --fleet-key-file; it
    re-reads the file when it changes."""
    source: str | None = None
    """Where the operator publishes that file (s3://BUCKET/KEY). Set: 'deploy fetch-fleet-key' downloads
    it, and a systemd timer runs that every ``refresh_seconds``, so a rotation reaches every instance.
    None: the file is put there by other means (a Kubernetes ConfigMap, an operator's copy)."""
    refresh_seconds: int = Field(300, ge=30, le=86400)

    @field_validator("kms_key_arn")
    @classmethod
    def _arn(cls, value: str) -> str:
        return check_kms_key_arn(value, error=ValueError)

    @field_validator("source")
    @classmethod
    def _source(cls, value: str | None) -> str | None:
        if value is not None and not _S3_OBJECT.fullmatch(value):
            raise ValueError(f"{value!r} is not an S3 object URL such as s3://BUCKET/fleet-key.json")
        return value


class DeployConfig(_Section):
    region: str
    enclave: EnclaveSection = EnclaveSection()
    build: BuildSection = BuildSection()
    kms_proxy: KmsProxySection = KmsProxySection()
    gateway: GatewaySection = GatewaySection()
    supervisor: SupervisorSection = SupervisorSection()
    fleet: FleetSection | None = None
    base_dir: Path = Path(".")
    """Folder relative paths are resolved against (the config file's folder)."""

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not an AWS region name such as eu-west-1")
        return value

    @model_validator(mode="after")
    def _fleet_key_in_this_region(self) -> DeployConfig:
        # The enclave reaches only this region's KMS (the vsock-proxy allowlist has one entry).
        if self.fleet is not None and self.fleet.kms_key_arn.split(":")[3] != self.region:
            key_region = self.fleet.kms_key_arn.split(":")[3]
            raise ValueError(
                f"fleet.kms_key_arn is in {key_region}, but the enclave reaches only KMS in {self.region}"
            )
        return self

    @property
    def kms_host(self) -> str:
        """The region's KMS endpoint: the only host vsock-proxy may reach and the name the enclave's
        /etc/hosts maps to its loopback forwarder (TLS is checked against it end to end)."""
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        return f"kms.{self.region}.{suffix}"

    @property
    def inference_threads(self) -> int:
        return self.enclave.threads or self.enclave.cpu_count

    def path(self, value: Path) -> Path:
        return value if value.is_absolute() else (self.base_dir / value).resolve()

    @classmethod
    def from_mapping(cls, data: dict[str, Any], base_dir: Path, source: str = "config") -> DeployConfig:
        try:
            return cls.model_validate({**data, "base_dir": base_dir})
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in exc.errors()
            )
            raise DeployConfigError(f"{source} is invalid: {problems}") from None

    @classmethod
    def load(cls, path: Path, **overrides: Any) -> DeployConfig:
        try:
            data = tomllib.loads(path.read_text())
        except OSError as exc:
            raise DeployConfigError(
                f"cannot read the deployment config {path} ({exc.strerror})",
                hint="pass --config with the path of your copy of deploy/nitro-llm.toml",
            ) from None
        except tomllib.TOMLDecodeError as exc:
            raise DeployConfigError(f"{path} is not valid TOML ({exc})") from None
        data.update({k: v for k, v in overrides.items() if v is not None})
        return cls.from_mapping(data, path.resolve().parent, source=str(path))
