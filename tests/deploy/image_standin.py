"""A real EIF and manifest in well under a second, for the deployment tests.

The root-filesystem build (mmdebstrap, the pinned Debian packages and wheels, the model) takes
minutes and is tested in tests/image. What deployment needs is its output: an EIF assembled by the
real EIF writer from stand-in nitro-cli blobs and a small application ramdisk, and the manifest the
real ``nitro-llm image build`` writes for it. So only ``build_image`` (the root filesystem and
ramdisk) is replaced; the EIF, its PCRs and the manifest's EIF section come from the product code.
"""

from __future__ import annotations

import contextlib
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from nitro_llm.image import build as build_module
from nitro_llm.image.app_files import ModelInput
from nitro_llm.image.layout import enclave_cmd, enclave_env
from nitro_llm.image.manifest import LlamaWheel, Manifest, OutputFile
from nitro_llm.image.ramdisk import pcr2_of_ramdisks

KERNEL = b"MZ" + bytes(range(256)) * 16 + b"stand-in bzImage"
INIT = b"\x7fELF stand-in init " * 40
NSM = b"\x7fELF stand-in nsm.ko " * 20
CMDLINE = "reboot=k panic=30 pci=off nomodules console=ttyS0"
TARBALL = b"stand-in rootfs tarball"


def write_blobs(directory: Path) -> Path:
    """nitro-cli's blobs folder (bzImage, cmdline, init, nsm.ko), stand-in bytes."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "bzImage").write_bytes(KERNEL)
    (directory / "cmdline").write_text(CMDLINE + "\n")
    (directory / "init").write_bytes(INIT)
    (directory / "nsm.ko").write_bytes(NSM)
    return directory


def _app_ramdisk(config: Any) -> bytes:
    # Differs with the measured configuration, as the real ramdisk does (it holds enclave.json).
    seed = repr(sorted(config.measured().items())).encode()
    return hashlib.shake_256(b"stand-in application ramdisk" + seed).digest(200_003)


def fast_build_image(out_dir: Path, **kwargs: Any) -> Manifest:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    config = kwargs["config"]
    app = _app_ramdisk(config)
    (out / "application.cpio").write_bytes(app)
    (out / "rootfs.tar").write_bytes(TARBALL)
    manifest = Manifest(
        entry="nitro_llm.enclave.main",
        cmd=tuple(enclave_cmd("nitro_llm.enclave.main", kwargs["entry_args"])),
        env=enclave_env(),
        source_date_epoch=0,
        debian_lock_sha256="a" * 64,
        debian=(),
        python_lock_sha256="b" * 64,
        wheels=(),
        llama_cpp_python=LlamaWheel("0.3.36", "c" * 64, "-DGGML_NATIVE=OFF", "x.whl", "d" * 64),
        model=ModelInput("model.gguf", 1, "e" * 64),
        model_path="/opt/nitro-llm/model.gguf",
        config=config.measured(),
        config_path="/opt/nitro-llm/enclave.json",
        config_sha256="f" * 64,
        code=(),
        rootfs_dir="rootfs",
        rootfs_tar=OutputFile("rootfs.tar", len(TARBALL), hashlib.sha256(TARBALL).hexdigest()),
        ramdisk=OutputFile("application.cpio", len(app), hashlib.sha256(app).hexdigest()),
        pcr2=pcr2_of_ramdisks([out / "application.cpio"]).hex(),
    )
    manifest.write(out / "manifest.json")
    return manifest


@contextlib.contextmanager
def fast_root_filesystem() -> Iterator[None]:
    """While active, 'nitro-llm image build' skips only the slow root-filesystem build."""
    real = build_module.build_image
    build_module.build_image = fast_build_image  # type: ignore[assignment]
    try:
        yield
    finally:
        build_module.build_image = real  # type: ignore[assignment]


def build(out: Path, blobs: Path, *args: str) -> tuple[Path, Path]:
    """'nitro-llm image build OUT --blobs BLOBS ...' with the fast root filesystem: (EIF, manifest)."""
    from typer.testing import CliRunner

    from nitro_llm.cli.main import full_app

    with fast_root_filesystem():
        result = CliRunner().invoke(
            full_app(), ["image", "build", str(out), "--blobs", str(blobs), "--quiet", *args]
        )
    assert result.exit_code == 0, result.output
    return out / "nitro-llm.eif", out / "manifest.json"
