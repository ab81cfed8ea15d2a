"""The Python lock: the enclave's third-party wheels, one exact file (SHA-256) each.

``deploy/image/python.lock`` is a pip requirements file with one ``--hash`` per requirement, the
wheel for the enclave (CPython 3.11, manylinux x86_64), so pip itself refuses any other file.

``update`` derives what to lock from the code rather than from a hand-kept list: the third-party
top-level imports that the enclave's entry module reaches (``modules.reachable``), mapped to their
distributions, plus the runtime requirements of the locally built llama-cpp-python. Each is pinned
to the version installed in the development environment, the one the tests ran against; pip then
resolves the rest of the closure for the enclave's platform (``--only-binary``, no sdists: nothing
is compiled on the way into the image).

Usage: ``nitro-llm image python-lock update [--entry MODULE]``.
"""

from __future__ import annotations

import importlib.metadata
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.image.digest import file_sha256
from nitro_llm.image.errors import ImageError, LockFileError, ToolError
from nitro_llm.image.progress import Progress

DEFAULT_PYTHON_LOCK = Path(__file__).resolve().parents[2] / "deploy" / "image" / "python.lock"

PYTHON_VERSION = "3.11"
ABI = "cp311"
# Debian bookworm has glibc 2.36: any manylinux wheel up to that runs on it.
PLATFORMS = ("manylinux2014_x86_64", *(f"manylinux_2_{minor}_x86_64" for minor in range(17, 37)))
LOCAL_WHEELS = frozenset({"llama_cpp_python"})

_REQ = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)$")
_HASH = re.compile(r"--hash=sha256:([0-9a-f]{64})")


@dataclass(frozen=True)
class PinnedWheel:
    name: str  # canonical: lower case, runs of "-_." as "_"
    version: str
    sha256: str

    @property
    def label(self) -> str:
        return f"wheel {self.name}=={self.version}"


def canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "_", name).lower()


def parse_wheel_name(filename: str) -> tuple[str, str]:
    parts = filename.removesuffix(".whl").split("-")
    if len(parts) < 5:
        raise LockFileError(f"{filename} is not a wheel file name")
    return canonical(parts[0]), parts[1]


def read_python_lock(path: Path = DEFAULT_PYTHON_LOCK) -> list[PinnedWheel]:
    """``name==version --hash=sha256:<digest>`` entries; backslash continuations as pip allows."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise LockFileError(f"cannot read the Python lock {path} ({exc.strerror})") from None
    wheels: list[PinnedWheel] = []
    for logical in text.replace("\\\n", " ").splitlines():
        line = logical.split("#", 1)[0].strip()
        if not line:
            continue
        match = _REQ.match(line.split()[0])
        hashes = _HASH.findall(line)
        if match is None or len(hashes) != 1:
            raise LockFileError(
                f"{path}: {line.split()[0]!r} needs the form name==version --hash=sha256:<digest>"
            )
        wheels.append(PinnedWheel(canonical(match.group(1)), match.group(2), hashes[0]))
    names = [w.name for w in wheels]
    if len(set(names)) != len(names):
        raise LockFileError(f"{path} pins a package twice")
    return wheels


def platform_args() -> list[str]:
    """pip options selecting wheels for the enclave's interpreter, whatever the build host runs."""
    args = ["--only-binary=:all:", "--python-version", PYTHON_VERSION, "--implementation", "cp"]
    args += ["--abi", ABI, "--abi", "abi3", "--abi", "none"]
    for platform in PLATFORMS:
        args += ["--platform", platform]
    return args


def run_pip(args: list[str], what: str) -> None:
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q", *args]
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise ToolError(
            f"pip failed while {what} (exit {done.returncode}): {done.stderr.strip()[-800:]}",
            hint="check the network, and that each pinned wheel exists for CPython 3.11 manylinux x86_64",
        )


def _installed_version(distribution: str) -> str:
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        raise ImageError(
            f"{distribution} is imported by the enclave but not installed here",
            hint="run scripts/setup.sh: the lock pins the versions the development environment tests",
        ) from None


def enclave_requirements(external_imports: tuple[str, ...]) -> list[str]:
    """``name==version`` for each distribution behind the enclave's third-party imports, and for
    the runtime requirements of the locally built wheels among them."""
    owners = importlib.metadata.packages_distributions()
    distributions: set[str] = set()
    for top_level in external_imports:
        found = owners.get(top_level)
        if not found:
            raise ImageError(
                f"the enclave imports {top_level!r}, which no installed distribution provides",
                hint="install the project's dependencies (scripts/setup.sh)",
            )
        distributions.update(found)
    for local in sorted(d for d in distributions if canonical(d) in LOCAL_WHEELS):
        distributions.discard(local)
        for requirement in importlib.metadata.requires(local) or []:
            if "extra ==" not in requirement:
                distributions.add(re.split(r"[<>=!~;\[ ]", requirement, maxsplit=1)[0])
    return sorted(f"{canonical(d)}=={_installed_version(d)}" for d in distributions)


def installed_versions() -> list[str]:
    """``name==version`` of every distribution in this environment, so that dependencies of
    dependencies are locked at the versions the tests ran against too."""
    pins = {
        canonical(d.metadata["Name"]): d.version
        for d in importlib.metadata.distributions()
        if d.metadata["Name"] and canonical(d.metadata["Name"]) not in LOCAL_WHEELS | {"nitro_llm"}
    }
    return [f"{name}=={version}" for name, version in sorted(pins.items())]


def update_python_lock(
    requirements: list[str], path: Path = DEFAULT_PYTHON_LOCK, progress: Progress | None = None
) -> list[PinnedWheel]:
    """Resolve ``requirements`` for the enclave's platform and write every wheel's digest."""
    (progress or Progress()).step(f"resolving {len(requirements)} Python requirements for {ABI} manylinux")
    with tempfile.TemporaryDirectory(prefix="nitro-llm-wheels-") as tmp:
        constraints = Path(tmp) / "constraints.txt"
        constraints.write_text("".join(f"{line}\n" for line in installed_versions()), encoding="utf-8")
        args = ["download", "--dest", tmp, "--constraint", str(constraints), *platform_args()]
        run_pip([*args, *requirements], "resolving the lock")
        found = []
        for wheel in sorted(Path(tmp).glob("*.whl")):
            name, version = parse_wheel_name(wheel.name)
            found.append((PinnedWheel(name, version, file_sha256(wheel)), wheel.name))
    lines = [
        "# Wheels of the enclave's third-party Python packages (CPython 3.11, manylinux x86_64), one",
        "# SHA-256 each. Generated by 'nitro-llm image python-lock update'; a build refuses",
        "# any other file. llama-cpp-python is built locally and recorded in the image manifest instead.",
    ]
    for pinned, filename in sorted(found, key=lambda item: item[0].name):
        lines += [f"{pinned.name}=={pinned.version} \\", f"    --hash=sha256:{pinned.sha256}  # {filename}"]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return [pinned for pinned, _ in found]
