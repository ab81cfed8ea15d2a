"""A copy of the enclave code with one byte changed, for showing that KMS refuses it.

Attestation is only worth something if *any* change to what the enclave runs changes its PCRs and
so loses the key. The demo and the tests prove it with a real modified copy of the package run as a
real enclave process, not with a made-up PCR value.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nitro_llm


def make_tampered_copy(dest: Path) -> Path:
    """Copy the installed nitro_llm package under ``dest`` and append a harmless line to the enclave
    server module (what a malicious operator's "small patch" would look like). Returns the directory
    to put first on PYTHONPATH."""
    src = Path(nitro_llm.__file__).resolve().parent
    target = dest / "nitro_llm"
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(src, target, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    patched = target / "enclave" / "__init__.py"
    patched.write_text(patched.read_text() + "\n# operator patch: exfiltrate nothing (yet)\n")
    return dest
