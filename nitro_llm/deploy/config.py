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
from nitro_llm.kms.connections import MAX_KMS_CONNECTIONS

_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d{1,2}$")

Port = Annotated[int, Field(ge=1, le=65535)]


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class EnclaveSection(_Section):
    cpu_count: int = Field(2, ge=2, description="vCPUs given to the enclave (x86: at least 2, whole cores)")
    memory_mib: int = Field(4096, ge=64, description="MiB given to the enclave; at least 4x the EIF size")
    cid: int = Field(16, ge=4, le=0xFFFFFFFE, description="the enclave's vsock CID (0-3 are reserved)")
    port: Port = Field(5000, description="vsock port the enclave serves on")
    eif: Path = Path("../build/nitro-llm.eif")
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


class GatewaySection(_Section):
    host: str = "0.0.0.0"
    port: Port = 8080
    user: str = "nitro-llm"
    nitro_llm: Path = Path("/opt/nitro-llm/venv/bin/nitro-llm")
    api_tokens_file: Path | None = Path("/etc/nitro-llm/api-tokens.json")
    """Bearer tokens of the clients allowed to call the gateway (`nitro-llm gateway-token FILE NAME`).
    Only None on a loopback-only gateway: an exposed gateway without tokens serves anyone."""


class DeployConfig(_Section):
    region: str
    enclave: EnclaveSection = EnclaveSection()
    build: BuildSection = BuildSection()
    kms_proxy: KmsProxySection = KmsProxySection()
    gateway: GatewaySection = GatewaySection()
    base_dir: Path = Path(".")
    """Folder relative paths are resolved against (the config file's folder)."""

    @field_validator("region")
    @classmethod
    def _region(cls, value: str) -> str:
        if not _REGION.fullmatch(value):
            raise ValueError(f"{value!r} is not an AWS region name such as eu-west-1")
        return value

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
