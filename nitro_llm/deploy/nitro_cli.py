"""The docker and nitro-cli command lines for building and running the enclave, as argv lists.

nitro-cli builds from a docker image; ours is the root filesystem of ``nitro-llm image build``,
loaded with ``docker import`` (no Dockerfile). ``nitro-llm image build --blobs`` is the
reproducible path: nitro-cli packs the same files into a ramdisk of its own, whose PCR2 is not the
manifest's (see ``nitro_llm.image.publish``).

Pure functions of the deployment config, so the exact commands are unit-tested here and shown to
the operator (``--dry-run``) before anything runs on a parent instance.
"""

from __future__ import annotations

import math
from pathlib import Path

from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import DeployConfigError, DeployError, EnclaveMemoryTooSmall
from nitro_llm.image.manifest import MANIFEST_FILE, PublishedManifest
from nitro_llm.image.publish import docker_import_argv as image_docker_import_argv

ROOTFS_TAR = "rootfs.tar"

MIB = 1024 * 1024
EIF_MEMORY_FACTOR = 4
"""nitro-cli needs room to unpack the EIF's ramdisks next to the running image: AWS asks for at
least four times the EIF's size, and an enclave given less fails at boot with an opaque error."""

DEBUG_MODE_WARNING = (
    "DEBUG MODE: this enclave will report all-zero PCR0/1/2 in its attestation documents and expose "
    "its console. Any key policy that pins the real measurements will REFUSE it (KMS Decrypt fails), "
    "and clients verifying attestation will reject it. Never use debug mode with real data."
)


def image_paths(cfg: DeployConfig) -> tuple[Path, Path]:
    """(manifest.json, rootfs.tar) of the build in ``build.image_dir``."""
    image_dir = cfg.path(cfg.build.image_dir)
    manifest = image_dir / MANIFEST_FILE
    if not manifest.is_file():
        raise DeployError(
            f"no image build in {image_dir} (no {MANIFEST_FILE})",
            hint=f"run 'nitro-llm image build {image_dir}' first, or set build.image_dir in the config",
        )
    return manifest, image_dir / ROOTFS_TAR


def docker_import_argv(cfg: DeployConfig, manifest: PublishedManifest, rootfs_tar: Path) -> list[str]:
    """``docker import`` of the image build's root filesystem, with its command and environment, so
    that nitro-cli builds its EIF from the same files, started the same way. Everything the enclave
    runs with is fixed by 'nitro-llm image build'; nothing here adds to it."""
    return image_docker_import_argv(manifest, rootfs_tar, cfg.enclave.image)


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
