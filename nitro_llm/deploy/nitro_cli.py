"""The docker and nitro-cli command lines for building and running the enclave, as argv lists.

Pure functions of the deployment config, so the exact commands are unit-tested here and shown to
the operator (``--dry-run``) before anything runs on a parent instance.
"""

from __future__ import annotations

import math

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError, EnclaveMemoryTooSmall

MIB = 1024 * 1024
EIF_MEMORY_FACTOR = 4
"""nitro-cli needs room to unpack the EIF's ramdisks next to the running image: AWS asks for at
least four times the EIF's size, and an enclave given less fails at boot with an opaque error."""

DEBUG_MODE_WARNING = (
    "DEBUG MODE: this enclave will report all-zero PCR0/1/2 in its attestation documents and expose "
    "its console. Any key policy that pins the real measurements will REFUSE it (KMS Decrypt fails), "
    "and clients verifying attestation will reject it. Never use debug mode with real data."
)


def image_build_args(cfg: DeployConfig) -> dict[str, str]:
    """Settings baked into the image. The enclave has no way to receive arguments at launch, and
    baking them in means they are measured into PCR0: a different region or port is a different,
    separately attested enclave."""
    return {
        "NITRO_LLM_REGION": cfg.region,
        "NITRO_LLM_ENCLAVE_PORT": str(cfg.enclave.port),
        "NITRO_LLM_KMS_PROXY_PORT": str(cfg.kms_proxy.port),
        "NITRO_LLM_THREADS": str(cfg.inference_threads),
        "NITRO_LLM_CTX": str(cfg.enclave.ctx),
    }


def docker_build_argv(cfg: DeployConfig) -> list[str]:
    argv = ["docker", "build", "--file", str(cfg.path(cfg.build.dockerfile)), "--tag", cfg.enclave.image]
    for key, value in image_build_args(cfg).items():
        argv += ["--build-arg", f"{key}={value}"]
    argv.append(str(cfg.path(cfg.build.context)))
    return argv


def build_enclave_argv(cfg: DeployConfig) -> list[str]:
    argv = [
        "nitro-cli",
        "build-enclave",
        "--docker-uri",
        cfg.enclave.image,
        "--output-file",
        str(cfg.path(cfg.enclave.eif)),
    ]
    cert, key = cfg.build.signing_certificate, cfg.build.signing_key
    if (cert is None) != (key is None):
        raise DeployConfigError(
            "build.signing_certificate and build.signing_key go together",
            hint="set both to sign the EIF (adds PCR8 to the measurements), or neither",
        )
    if cert is not None and key is not None:
        argv += ["--signing-certificate", str(cfg.path(cert)), "--private-key", str(cfg.path(key))]
    return argv


def describe_eif_argv(cfg: DeployConfig) -> list[str]:
    return ["nitro-cli", "describe-eif", "--eif-path", str(cfg.path(cfg.enclave.eif))]


def required_memory_mib(eif_bytes: int) -> int:
    return max(64, math.ceil(EIF_MEMORY_FACTOR * eif_bytes / MIB))


def check_enclave_memory(memory_mib: int, eif_bytes: int) -> None:
    need = required_memory_mib(eif_bytes)
    if memory_mib < need:
        raise EnclaveMemoryTooSmall(
            f"the enclave gets {memory_mib} MiB but the EIF is {eif_bytes / MIB:.1f} MiB; "
            f"it needs at least {need} MiB ({EIF_MEMORY_FACTOR}x the EIF)",
            hint=f"set enclave.memory_mib >= {need} in the deployment config, re-run "
            "'nitro-llm deploy allocator' and restart nitro-enclaves-allocator.service",
        )


def run_enclave_argv(cfg: DeployConfig, *, debug_mode: bool = False) -> list[str]:
    argv = [
        "nitro-cli",
        "run-enclave",
        "--enclave-name",
        cfg.enclave.name,
        "--eif-path",
        str(cfg.path(cfg.enclave.eif)),
        "--cpu-count",
        str(cfg.enclave.cpu_count),
        "--memory",
        str(cfg.enclave.memory_mib),
        "--enclave-cid",
        str(cfg.enclave.cid),
    ]
    if debug_mode:
        argv.append("--debug-mode")
    return argv


def terminate_enclave_argv(cfg: DeployConfig) -> list[str]:
    return ["nitro-cli", "terminate-enclave", "--enclave-name", cfg.enclave.name]


def describe_enclaves_argv() -> list[str]:
    return ["nitro-cli", "describe-enclaves"]
