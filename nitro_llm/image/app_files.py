"""The application part of the image: the product code the enclave reaches, its model and its
measured configuration, at the fixed paths of ``layout``.

The model is copied and hashed in one pass and refused, by name, when its SHA-256 is not the one
pinned (the packaged default's, or the one the operator gave with their own GGUF): it is the
largest input and the one a swapped file would change the most.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.enclave.config import EnclaveConfig, canonical_config
from nitro_llm.image.errors import InputMismatchError, InputMissingError
from nitro_llm.image.fs import FILE_MODE, ensure_dir, write_file
from nitro_llm.image.layout import APP_CODE, CONFIG_PATH, MODEL_PATH
from nitro_llm.image.modules import ModuleSet
from nitro_llm.inference.model import DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256, default_model_path

_CHUNK = 1 << 20


@dataclass(frozen=True)
class ModelInput:
    name: str
    size: int
    sha256: str


def copy_code(modules: ModuleSet, root: Path) -> list[str]:
    """Copy the reachable product files under ``/opt/nitro-llm/app``; returns their image paths."""
    placed = []
    for source in modules.files:
        rel = source.relative_to(modules.root).as_posix()
        write_file(root / APP_CODE / rel, source.read_bytes(), FILE_MODE)
        placed.append(f"{APP_CODE}/{rel}")
    return placed


def resolve_model(model: Path | None, model_sha256: str | None) -> tuple[Path, str, str]:
    """(path, expected SHA-256, name): the packaged default, or the operator's file and digest."""
    if model is None:
        if model_sha256 is not None and model_sha256.lower() != DEFAULT_MODEL_SHA256:
            return default_model_path(), model_sha256.lower(), DEFAULT_MODEL_FILE
        return default_model_path(), DEFAULT_MODEL_SHA256, DEFAULT_MODEL_FILE
    if not model_sha256:
        raise InputMissingError(
            f"model {model.name}",
            "a model other than the default needs its SHA-256",
            hint="pass model_sha256 (sha256sum of the GGUF file, from a source you trust)",
        )
    return model, model_sha256.lower(), model.name


def copy_model(model: Path, expected_sha256: str, name: str, root: Path) -> ModelInput:
    if not model.is_file():
        raise InputMissingError(f"model {name}", f"no file at {model}")
    target = root / MODEL_PATH
    ensure_dir(target.parent)
    digest = hashlib.sha256()
    with model.open("rb") as src, target.open("wb") as dst:
        while block := src.read(_CHUNK):
            digest.update(block)
            dst.write(block)
    os.chmod(target, FILE_MODE)
    if digest.hexdigest() != expected_sha256:
        target.unlink()
        raise InputMismatchError(
            f"model {name}",
            f"{model} has SHA-256 {digest.hexdigest()}, expected {expected_sha256}",
            hint="use the model file the digest was published for, or pass the right digest",
        )
    write_file(root / f"{MODEL_PATH}.sha256", f"{expected_sha256}  model.gguf\n".encode("ascii"))
    return ModelInput(name=name, size=target.stat().st_size, sha256=expected_sha256)


def write_config(config: EnclaveConfig, root: Path) -> bytes:
    """The measured configuration as the canonical JSON its digest is computed over."""
    data = canonical_config(config.measured())
    write_file(root / CONFIG_PATH, data)
    return data
