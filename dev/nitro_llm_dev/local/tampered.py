"""A copy of the enclave code with one byte changed, for showing that KMS refuses it.

Attestation is only worth something if *any* change to what the enclave runs changes its PCRs and
so loses the key. The demo and the tests prove it with a real modified copy of the package run as a
real enclave process, not with a made-up PCR value.
"""

from __future__ import annotations

import os
import shutil
import site
from dataclasses import dataclass
from pathlib import Path

import nitro_llm
import nitro_llm_dev


@dataclass(frozen=True)
class CodeOverride:
    """How to start a Python process that runs another copy of nitro_llm than the installed one.

    ``-S`` skips site-packages' .pth hooks, because an editable install's import hook would otherwise
    win over PYTHONPATH; the site-packages folders are then put back on PYTHONPATH, after the copy.
    The working directory is the copy's folder, because ``python -m`` puts it first on sys.path.
    """

    python_flags: tuple[str, ...]
    env: dict[str, str]
    cwd: Path


def copy_code(dest: Path) -> CodeOverride:
    """Copy the installed nitro_llm package under ``dest`` and say how to run that copy.

    Also used unchanged, as a frozen copy: an enclave restarted from a working tree that was edited
    meanwhile would attest to other PCRs and KMS would (rightly) refuse it.
    """
    target = dest / "nitro_llm"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(
        Path(nitro_llm.__file__).resolve().parent,
        target,
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    dev_tooling = Path(nitro_llm_dev.__file__).resolve().parents[1]  # its editable hook is skipped too
    path = os.pathsep.join([str(dest), str(dev_tooling), *site.getsitepackages()])
    return CodeOverride(python_flags=("-S",), env={"PYTHONPATH": path}, cwd=dest)


def make_tampered_copy(dest: Path) -> CodeOverride:
    """A copy with one harmless line appended to the enclave package (what a malicious operator's
    "small patch" would look like)."""
    code = copy_code(dest)
    patched = dest / "nitro_llm" / "enclave" / "__init__.py"
    patched.write_text(patched.read_text() + "\n# operator patch: exfiltrate nothing (yet)\n")
    return code
