"""Which of the product's modules go into the enclave image: those its entry module can import.

The image is measured into PCR0/PCR2, so every file in it is something a reviewer of the enclave
must trust; the gateway, the client and the development tools stay out. The set is computed from
the import graph (grimp, the engine of import-linter, which also checks the package contracts),
counting imports inside functions too, since those run in the enclave as well; only imports under
``if TYPE_CHECKING:`` are left out. Importing a module runs every enclosing package's
``__init__``, so those are included with whatever they import in turn.

Package data (the pinned AWS Nitro root certificate, for one) is included for every package in
the set: files that are not Python, in the package's directory and in its non-package
subdirectories.
"""

from __future__ import annotations

import importlib.util
import sys
from dataclasses import dataclass
from pathlib import Path

import grimp

from nitro_llm.image.errors import InputMissingError

DEFAULT_ENTRY = "nitro_llm.enclave.main"
PRODUCT_PACKAGE = "nitro_llm"
_DATA_SUFFIXES = (".pem", ".json", ".html", ".txt", ".toml")


@dataclass(frozen=True)
class ModuleSet:
    """The enclave's product modules and the third-party top-level imports they make."""

    root: Path  # the directory holding the ``nitro_llm`` package
    modules: tuple[str, ...]
    files: tuple[Path, ...]
    external: tuple[str, ...]


def _package_dir(package: str = PRODUCT_PACKAGE) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise InputMissingError(package, "the product package cannot be found on sys.path")
    return Path(next(iter(spec.submodule_search_locations))).resolve()


def _ancestors(module: str) -> list[str]:
    parts = module.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts))]


def import_graph(package: str = PRODUCT_PACKAGE) -> grimp.ImportGraph:
    """The package's import graph as it is on disk now (about 0.1 s; ``reachable`` takes one to
    answer several questions about the same tree)."""
    return grimp.build_graph(
        package, include_external_packages=True, exclude_type_checking_imports=True, cache_dir=None
    )


def reachable(entry: str = DEFAULT_ENTRY, *, graph: grimp.ImportGraph | None = None) -> ModuleSet:
    """``graph``: the product package's ``import_graph()`` if the caller has it, else built here."""
    package = entry.split(".", 1)[0]
    if package != PRODUCT_PACKAGE:
        raise InputMissingError(entry, f"the enclave entry module must be inside {PRODUCT_PACKAGE}")
    if graph is None:
        graph = import_graph(package)
    if entry not in graph.modules:
        raise InputMissingError(
            f"entry module {entry}",
            f"not found in the {package} package",
            hint="pass the enclave's entry module (build_image(entry=...)), e.g. the module run by "
            "'python -m' inside the enclave",
        )
    found: set[str] = set()
    pending = [entry]
    while pending:
        module = pending.pop()
        if module in found:
            continue
        found.add(module)
        pending.extend(m for m in graph.find_upstream_modules(module) if m not in found)
        pending.extend(a for a in _ancestors(module) if a not in found)
    internal = sorted(m for m in found if m == package or m.startswith(package + "."))
    external = sorted(
        {m.split(".")[0] for m in found} - set(internal) - set(sys.stdlib_module_names) - {package}
    )
    root = _package_dir(package).parent
    files: set[Path] = set()
    for module in internal:
        path, is_package = _module_file(root, module)
        files.add(path)
        if is_package:
            files.update(_package_data(path.parent))
    return ModuleSet(root=root, modules=tuple(internal), files=tuple(sorted(files)), external=tuple(external))


def enclave_modules(entry: str = DEFAULT_ENTRY) -> list[Path]:
    """Source files (``.py`` and package data) the enclave's entry module can reach, sorted."""
    return list(reachable(entry).files)


def _module_file(root: Path, module: str) -> tuple[Path, bool]:
    base = root.joinpath(*module.split("."))
    if (base / "__init__.py").is_file():
        return base / "__init__.py", True
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py"), False
    raise InputMissingError(module, f"no source file at {base}.py or {base}/__init__.py")


def _package_data(directory: Path) -> list[Path]:
    found = []
    for path in sorted(directory.iterdir()):
        if path.is_file() and path.suffix in _DATA_SUFFIXES:
            found.append(path)
        elif path.is_dir() and path.name != "__pycache__" and not (path / "__init__.py").exists():
            found.extend(p for p in sorted(path.rglob("*")) if p.is_file() and p.suffix in _DATA_SUFFIXES)
    return found
