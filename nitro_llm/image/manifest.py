"""The build manifest: every input with its version and digest, and the outputs with theirs.

Published next to the EIF, it is what a third party needs to rebuild the image and compare, and
what the key policy is generated from (PCR2 here; PCR0/1 come with the EIF, which adds nitro-cli's
kernel and bootstrap). It names output files relative to the build directory and holds no time
or host detail, so two builds of the same inputs write the same manifest, byte for byte.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from nitro_llm.image.app_files import ModelInput
from nitro_llm.image.lock import DebPackage
from nitro_llm.image.python_deps import WheelInput

MANIFEST_FORMAT = 1


@dataclass(frozen=True)
class OutputFile:
    file: str  # relative to the build directory
    size: int
    sha256: str


@dataclass(frozen=True)
class LlamaWheel:
    """The locally built llama-cpp-python: its source is pinned, its wheel only recorded."""

    version: str
    sdist_sha256: str
    cmake_args: str
    wheel: str
    wheel_sha256: str


@dataclass(frozen=True)
class CodeFile:
    path: str  # in the image
    sha256: str


@dataclass(frozen=True)
class Manifest:
    entry: str
    cmd: tuple[str, ...]
    env: dict[str, str]
    source_date_epoch: int
    debian_lock_sha256: str
    debian: tuple[DebPackage, ...]
    python_lock_sha256: str
    wheels: tuple[WheelInput, ...]
    llama_cpp_python: LlamaWheel
    model: ModelInput
    model_path: str
    config: dict[str, Any]
    config_path: str
    config_sha256: str
    code: tuple[CodeFile, ...]
    rootfs_dir: str
    rootfs_tar: OutputFile
    ramdisk: OutputFile
    pcr2: str

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        return {
            "format": MANIFEST_FORMAT,
            "entrypoint": {"entry": data["entry"], "cmd": data["cmd"], "env": data["env"]},
            "source_date_epoch": data["source_date_epoch"],
            "inputs": {
                "debian": {"lock_sha256": data["debian_lock_sha256"], "packages": data["debian"]},
                "python": {"lock_sha256": data["python_lock_sha256"], "wheels": data["wheels"]},
                "llama_cpp_python": data["llama_cpp_python"],
                "model": {**data["model"], "path": data["model_path"]},
                "config": {
                    "path": data["config_path"],
                    "sha256": data["config_sha256"],
                    "measured": data["config"],
                },
                "code": data["code"],
            },
            "outputs": {
                "rootfs_dir": data["rootfs_dir"],
                "rootfs_tar": data["rootfs_tar"],
                "ramdisk": data["ramdisk"],
                "pcr2": data["pcr2"],
            },
        }

    def to_json(self) -> bytes:
        return (json.dumps(self.to_dict(), indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode(
            "utf-8"
        )

    def write(self, path: Path) -> None:
        path.write_bytes(self.to_json())
