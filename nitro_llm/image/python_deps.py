"""Put the enclave's third-party Python packages into the image: pinned wheels, hash-checked.

Wheels come from the cache (``pip download --require-hashes`` fills it with what is missing) and
each is checked against ``deploy/image/python.lock`` before use. They are unpacked here rather
than by ``pip install --target``: pip writes console scripts whose shebang names the builder's
interpreter, and their hashes into RECORD, so its output depends on the machine. A wheel is a zip
whose ``purelib``/``platlib`` contents go into one directory; that is all the enclave needs.
Scripts, headers and data files are left out, as are the top-level ``include``/``lib`` trees that
CMake-built wheels carry beside the package (llama_cpp loads its libraries from ``llama_cpp/lib``).

llama-cpp-python is the exception to pinning: it is compiled on the build machine (portable
flags, see scripts/setup.sh), and a compiled wheel is not bit-for-bit reproducible across
toolchains, so its hash cannot live in git. The manifest records its sdist version and SHA-256,
the build flags and the wheel's SHA-256; the wheel's bytes feed PCR2 like everything else, so the
same wheel gives the same image, and a published manifest says which wheel that was.
"""

from __future__ import annotations

import stat
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from nitro_llm.image.digest import file_sha256
from nitro_llm.image.errors import InputMismatchError, InputMissingError, LayoutError
from nitro_llm.image.fs import FILE_MODE, ensure_dir, write_file
from nitro_llm.image.progress import Progress
from nitro_llm.image.python_lock import PinnedWheel, parse_wheel_name, platform_args, run_pip

LLAMA_CPP_VERSION = "0.3.36"
LLAMA_CPP_SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
LLAMA_CPP_CMAKE_ARGS = (
    "-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DLLAMA_CURL=OFF"
)

_SKIPPED_TOP_LEVEL = frozenset({"include", "lib", "lib64", "bin", "share"})


@dataclass(frozen=True)
class WheelInput:
    """A wheel that went into the image, as the manifest lists it."""

    name: str
    version: str
    sha256: str
    filename: str


def default_llama_wheel(wheel_dir: Path) -> Path:
    found = sorted(wheel_dir.glob(f"llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl"))
    if not found:
        raise InputMissingError(
            f"llama-cpp-python {LLAMA_CPP_VERSION} wheel",
            f"no llama_cpp_python-{LLAMA_CPP_VERSION}-*.whl in {wheel_dir}",
            hint="run scripts/setup.sh, which builds it once (portable flags) and caches it there",
        )
    return found[0]


def _candidates(pinned: PinnedWheel, cache_dir: Path) -> list[Path]:
    """Cached wheels with the pinned name and version (any platform tag), in name order."""
    return [
        p
        for p in sorted(cache_dir.glob("*.whl"))
        if parse_wheel_name(p.name) == (pinned.name, pinned.version)
    ]


def fetch_wheels(
    pinned: list[PinnedWheel], cache_dir: Path, progress: Progress | None = None
) -> dict[str, Path]:
    """Every pinned wheel from the cache (downloading the missing ones), each hash-checked."""
    ensure_dir(cache_dir)
    missing = [w for w in pinned if not _candidates(w, cache_dir)]
    if missing:
        (progress or Progress()).step(f"downloading {len(missing)} wheels")
        with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="nitro-llm-req-") as req:
            req.write("".join(f"{w.name}=={w.version} --hash=sha256:{w.sha256}\n" for w in missing))
            req.flush()
            args = ["download", "--no-deps", "--require-hashes", "--dest", str(cache_dir)]
            run_pip([*args, *platform_args(), "-r", req.name], "downloading pinned wheels")
    paths: dict[str, Path] = {}
    for wheel in pinned:
        candidates = _candidates(wheel, cache_dir)
        if not candidates:
            raise InputMissingError(wheel.label, f"not in {cache_dir} after download")
        matching = [p for p in candidates if file_sha256(p) == wheel.sha256]
        if not matching:
            digest = file_sha256(candidates[0])
            raise InputMismatchError(
                wheel.label,
                f"{candidates[0]} has SHA-256 {digest}, the lock says {wheel.sha256}",
                hint=f"delete {candidates[0]} to download it again; PyPI never changes a released file, "
                "so a different digest means a corrupted or substituted download",
            )
        paths[wheel.name] = matching[0]
    return paths


def unpack_wheel(wheel: Path, target: Path, owners: dict[str, str]) -> None:
    """Unpack one wheel's importable contents into ``target`` with normalised modes."""
    name, version = wheel.name.split("-")[:2]
    data_dir = f"{name}-{version}.data/"
    with zipfile.ZipFile(wheel) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            rel = info.filename
            if rel.startswith(data_dir):
                kind, _, rest = rel[len(data_dir) :].partition("/")
                if kind not in ("purelib", "platlib"):
                    continue
                rel = rest
            path = PurePosixPath(rel)
            if path.is_absolute() or ".." in path.parts:
                raise LayoutError(f"{wheel.name}: unsafe path {info.filename!r}")
            if info.is_dir() or not rel or path.parts[0] in _SKIPPED_TOP_LEVEL:
                continue
            if rel in owners:
                raise LayoutError(f"{rel} is shipped by both {owners[rel]} and {wheel.name}")
            owners[rel] = wheel.name
            executable = (info.external_attr >> 16) & stat.S_IXUSR
            write_file(target / rel, archive.read(info), 0o755 if executable else FILE_MODE)


def install_wheels(wheels: list[Path], target: Path, progress: Progress | None = None) -> None:
    (progress or Progress()).step(f"unpacking {len(wheels)} wheels")
    ensure_dir(target)
    owners: dict[str, str] = {}
    for wheel in sorted(wheels, key=lambda p: p.name):
        unpack_wheel(wheel, target, owners)


def wheel_inputs(pinned: list[PinnedWheel], paths: dict[str, Path]) -> list[WheelInput]:
    return [WheelInput(w.name, w.version, w.sha256, paths[w.name].name) for w in pinned]
