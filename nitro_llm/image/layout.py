"""Where things live in the enclave's root filesystem, and how the init starts the enclave.

Fixed paths, so that the measured command line can name them and nothing at launch can choose
another model or configuration: a different file means a different image, other PCRs, no key.

The environment is part of the measured image too, so each variable is a decision:

- ``PYTHONPATH``: the product code first, then its third-party packages; Debian's interpreter
  otherwise only sees its own stdlib.
- ``PYTHONDONTWRITEBYTECODE``: the bytecode is compiled at build time (deterministically, so it is
  part of what PCR2 covers); nothing should try to write more at run time, and in local mode the
  root is read-only.
- ``PYTHONUNBUFFERED``: log lines reach the console (debug mode) when they happen.
- ``PYTHONUTF8``: text I/O does not depend on a locale the image does not have.
- No ``PYTHONHASHSEED``: hash randomisation stays on. The enclave parses maps from the untrusted
  gateway, and a fixed seed would let a peer precompute colliding keys (hash flooding); the
  determinism it buys is only needed when compiling, where the build sets it.
- No proxy, DNS or other network settings: the enclave has no network, only vsock.
"""

from __future__ import annotations

APP_ROOT = "opt/nitro-llm"
SITE_PACKAGES = f"{APP_ROOT}/site-packages"
APP_CODE = f"{APP_ROOT}/app"
MODEL_PATH = f"{APP_ROOT}/model.gguf"
CONFIG_PATH = f"{APP_ROOT}/enclave.json"
PYTHON = "/usr/bin/python3.11"
STDLIB = "usr/lib/python3.11"


def enclave_cmd(entry: str, args: tuple[str, ...] | None = None) -> list[str]:
    """``python3.11 -P -s -m ENTRY --config /opt/nitro-llm/enclave.json``.

    ``-P`` keeps the working directory off ``sys.path`` and ``-s`` the user's site directory: only
    the image's own code can be imported.
    """
    tail = list(args) if args is not None else ["--config", f"/{CONFIG_PATH}"]
    return [PYTHON, "-P", "-s", "-m", entry, *tail]


def enclave_env() -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"/{APP_CODE}:/{SITE_PACKAGES}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONUTF8": "1",
    }
