"""The import contracts hold, and the checker really fails when a forbidden import is added."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from architecture.boundary import ROOT, forbidden_for, violations

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path, pythonpath: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": pythonpath} if pythonpath else dict(os.environ)
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True, timeout=300
    )


def test_contracts_cover_every_party() -> None:
    assert "nitro_llm.enclave" in forbidden_for("nitro_llm.gateway")
    assert "nitro_llm.kms.cms" in forbidden_for("nitro_llm.gateway")
    assert "nitro_llm.gateway" in forbidden_for("nitro_llm.enclave")
    assert "nitro_llm_dev" in forbidden_for("nitro_llm")
    assert "nitro_llm.enclave" in forbidden_for("nitro_llm.proxy")


def test_violations_matches_whole_module_names_only() -> None:
    loaded = ["nitro_llm.enclave", "nitro_llm.enclave.server", "nitro_llm.enclave_extra", "json"]
    assert violations(loaded, ["nitro_llm.enclave"]) == ["nitro_llm.enclave", "nitro_llm.enclave.server"]


@pytest.mark.slow
def test_the_tree_keeps_its_contracts() -> None:
    result = _lint(ROOT)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-2000:]
    assert "BROKEN" not in result.stdout


@pytest.mark.slow
@pytest.mark.parametrize(
    "edits",
    [
        # two modules away: the gateway's settings import deploy code that imports the enclave's keys
        {
            "nitro_llm/gateway/settings.py": "import nitro_llm.deploy.measurements\n",
            "nitro_llm/deploy/measurements.py": "import nitro_llm.enclave.data_keys\n",
        },
        {"nitro_llm/enclave/freshness.py": "import nitro_llm_dev.bench\n"},
        {"nitro_llm/transport/address.py": "import nitro_llm_dev.local.stack\n"},
        {"nitro_llm/proxy/app.py": "import nitro_llm.gateway.auth\n"},
    ],
    ids=["gateway-transitive", "enclave-dev", "product-dev", "proxy-gateway"],
)
def test_an_added_forbidden_import_fails_the_check(tmp_path: Path, edits: dict[str, str]) -> None:
    """A copy of both packages with imports added; lint-imports must reject it."""
    shutil.copytree(ROOT / "nitro_llm", tmp_path / "nitro_llm", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(
        ROOT / "dev" / "nitro_llm_dev",
        tmp_path / "nitro_llm_dev",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    for relative, line in edits.items():
        target = tmp_path / relative
        target.write_text(target.read_text() + "\n" + line)
    result = _lint(tmp_path, pythonpath=str(tmp_path))
    assert result.returncode != 0, result.stdout[-3000:]
    assert "BROKEN" in result.stdout
