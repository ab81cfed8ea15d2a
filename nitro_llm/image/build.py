"""Build the enclave's root filesystem and application ramdisk from pinned, hash-checked inputs.

No Docker and no root: Debian packages from ``deploy/image/debian.lock``, wheels from
``deploy/image/python.lock``, the locally built llama-cpp-python wheel, the product modules the
enclave's entry module reaches, the model and the measured configuration. Outputs, in
``out_dir``:

- ``rootfs/``: the root filesystem as a directory, for local mode to run the enclave from;
- ``rootfs.tar``: the same tree as a tarball (``docker import`` gives nitro-cli users the same root);
- ``application.cpio``: the application ramdisk (``ramdisk``), whose bytes make PCR2;
- ``manifest.json``: every input with its version and digest, the outputs' digests and PCR2.

The same inputs give the same bytes in any directory, at any time, on any machine: this is what
lets a key policy pin PCRs computed here before the enclave ever runs. Downloads are cached under
``~/.cache/nitro-llm/image`` (``$NITRO_LLM_CACHE/image``) and hash-checked on every use.

Usage: ``nitro-llm image build OUT_DIR [--model GGUF --model-sha256 HEX] (see its --help)``.
"""

from __future__ import annotations

import hashlib
import os
import shutil
from pathlib import Path

from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.image.app_files import copy_code, copy_model, resolve_model, write_config
from nitro_llm.image.bytecode import compile_tree
from nitro_llm.image.debian_root import unpack_packages
from nitro_llm.image.digest import file_sha256
from nitro_llm.image.errors import ImageError, InputMissingError
from nitro_llm.image.fs import DIR_MODE
from nitro_llm.image.import_check import check_imports
from nitro_llm.image.layout import (
    APP_CODE,
    CONFIG_PATH,
    MODEL_PATH,
    SITE_PACKAGES,
    STDLIB,
    enclave_cmd,
    enclave_env,
)
from nitro_llm.image.lock import DEFAULT_LOCK_PATH, read_lock
from nitro_llm.image.manifest import MANIFEST_FILE, CodeFile, LlamaWheel, Manifest, OutputFile
from nitro_llm.image.modules import DEFAULT_ENTRY, reachable
from nitro_llm.image.progress import Progress
from nitro_llm.image.python_deps import (
    LLAMA_CPP_CMAKE_ARGS,
    LLAMA_CPP_SDIST_SHA256,
    LLAMA_CPP_VERSION,
    default_llama_wheel,
    fetch_wheels,
    install_wheels,
    wheel_inputs,
)
from nitro_llm.image.python_lock import DEFAULT_PYTHON_LOCK, read_python_lock
from nitro_llm.image.ramdisk import write_ramdisk
from nitro_llm.image.rootfs_tar import write_tar
from nitro_llm.image.system_files import write_system_files
from nitro_llm.image.tree import normalise, walk

ROOTFS_DIR = "rootfs"
ROOTFS_TAR = "rootfs.tar"
RAMDISK = "application.cpio"
MANIFEST = MANIFEST_FILE


def cache_root() -> Path:
    base = os.environ.get("NITRO_LLM_CACHE") or str(Path.home() / ".cache" / "nitro-llm")
    return Path(base)


def source_date_epoch() -> int:
    """``$SOURCE_DATE_EPOCH`` (reproducible-builds.org), else 0: the time stamped on every file."""
    raw = os.environ.get("SOURCE_DATE_EPOCH", "0")
    if not raw.isdigit():
        raise ImageError(f"SOURCE_DATE_EPOCH={raw!r} is not a number of seconds", hint="unset it or fix it")
    return int(raw)


def build_image(
    out_dir: Path,
    *,
    model: Path | None = None,
    model_sha256: str | None = None,
    config: EnclaveConfig | None = None,
    lock: Path = DEFAULT_LOCK_PATH,
    python_lock: Path = DEFAULT_PYTHON_LOCK,
    llama_wheel: Path | None = None,
    entry: str = DEFAULT_ENTRY,
    entry_args: tuple[str, ...] | None = None,
    cache_dir: Path | None = None,
    epoch: int | None = None,
    progress: Progress | None = None,
) -> Manifest:
    """Build into ``out_dir`` (replacing a previous build there) and return the manifest."""
    progress = progress or Progress()
    config = config or EnclaveConfig()
    cache = cache_dir or cache_root()
    epoch = source_date_epoch() if epoch is None else epoch
    out_dir = Path(out_dir).resolve()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = out_dir / f".{ROOTFS_DIR}.partial"
    if staging.exists():
        shutil.rmtree(staging)
    staging.mkdir()
    os.chmod(staging, DIR_MODE)

    modules = reachable(entry)
    progress.step(
        f"{entry} reaches {len(modules.modules)} product modules, imports {', '.join(modules.external)}"
    )
    debian = read_lock(lock)
    pinned = read_python_lock(python_lock)
    llama = llama_wheel or default_llama_wheel(cache / "wheels")
    if not llama.is_file():
        raise InputMissingError("llama-cpp-python wheel", f"no file at {llama}")

    unpack_packages(debian, staging, cache / "image" / "debs", progress)
    write_system_files(staging)
    wheels = fetch_wheels(pinned, cache / "image" / "wheels", progress)
    install_wheels([*wheels.values(), llama], staging / SITE_PACKAGES, progress)
    code = copy_code(modules, staging)
    model_file, expected, model_name = resolve_model(model, model_sha256)
    progress.step(f"copying and hashing the model {model_name}")
    model_input = copy_model(model_file, expected, model_name, staging)
    config_bytes = write_config(config, staging)

    compile_tree(staging, [STDLIB, SITE_PACKAGES, APP_CODE], progress)
    check_imports(staging, [entry, *modules.external], progress)

    progress.step("writing the root filesystem tarball and the application ramdisk")
    nodes = walk(staging)
    normalise(staging, nodes, epoch)
    cmd = enclave_cmd(entry, entry_args)
    env = enclave_env()
    write_tar(nodes, out_dir / ROOTFS_TAR, epoch)
    ramdisk = write_ramdisk(nodes, cmd, env, out_dir / RAMDISK, epoch)
    final = out_dir / ROOTFS_DIR
    if final.exists():
        shutil.rmtree(final)
    staging.rename(final)

    manifest = Manifest(
        entry=entry,
        cmd=tuple(cmd),
        env=env,
        source_date_epoch=epoch,
        debian_lock_sha256=file_sha256(lock),
        debian=tuple(sorted(debian.packages, key=lambda p: p.name)),
        python_lock_sha256=file_sha256(python_lock),
        wheels=tuple(wheel_inputs(pinned, wheels)),
        llama_cpp_python=LlamaWheel(
            version=LLAMA_CPP_VERSION,
            sdist_sha256=LLAMA_CPP_SDIST_SHA256,
            cmake_args=LLAMA_CPP_CMAKE_ARGS,
            wheel=llama.name,
            wheel_sha256=file_sha256(llama),
        ),
        model=model_input,
        model_path=f"/{MODEL_PATH}",
        config=config.measured(),
        config_path=f"/{CONFIG_PATH}",
        config_sha256=_sha256(config_bytes),
        code=tuple(CodeFile(f"/{path}", file_sha256(final / path)) for path in code),
        rootfs_dir=ROOTFS_DIR,
        rootfs_tar=OutputFile(
            ROOTFS_TAR, (out_dir / ROOTFS_TAR).stat().st_size, file_sha256(out_dir / ROOTFS_TAR)
        ),
        ramdisk=OutputFile(RAMDISK, ramdisk.size, ramdisk.sha256),
        pcr2=ramdisk.pcr2,
    )
    manifest.write(out_dir / MANIFEST)
    progress.step(
        f"done: ramdisk {ramdisk.size >> 20} MiB, sha256 {ramdisk.sha256[:16]}…, PCR2 {ramdisk.pcr2[:16]}…"
    )
    return manifest


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
