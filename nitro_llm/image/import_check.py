"""Before an image is accepted: can its own interpreter import what the enclave imports?

A wheel missing from the Python lock, a Debian library left out that an extension module needs, or
a product module the import graph missed would otherwise surface only when the enclave starts,
inside Nitro, with no console. Importing the entry module and every third-party package it uses,
with the image's interpreter, libraries and ``PYTHONPATH`` (through its own loader, no root needed),
turns that into a build failure naming the module.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

from nitro_llm.image.bytecode import image_python
from nitro_llm.image.errors import InputMissingError
from nitro_llm.image.layout import APP_CODE, SITE_PACKAGES
from nitro_llm.image.progress import Progress

_SCRIPT = """
import importlib, sys
for name in sys.argv[1:]:
    try:
        importlib.import_module(name)
    except Exception as exc:
        print(f"{name}: {type(exc).__name__}: {exc}")
        sys.exit(1)
"""


def check_imports(root: Path, modules: list[str], progress: Progress | None = None) -> None:
    (progress or Progress()).step(f"importing {len(modules)} modules with the image's interpreter")
    env = {
        "PYTHONPATH": f"{root / APP_CODE}:{root / SITE_PACKAGES}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "LC_ALL": "C.UTF-8",
    }
    command = [*image_python(root), "-s", "-P", "-c", _SCRIPT, *modules]
    done = subprocess.run(command, capture_output=True, text=True, env=env, cwd=root, check=False)
    if done.returncode != 0:
        failed = (done.stdout.strip() or done.stderr.strip()[-600:]).splitlines()
        culprit = failed[0].split(":", 1)[0] if failed else "an import"
        raise InputMissingError(
            culprit,
            f"the image's interpreter cannot import it: {' '.join(failed)[-600:]}",
            hint="regenerate the locks (nitro-llm image python-lock update; "
            "nitro-llm image lock update) so they cover what the enclave imports",
        )
