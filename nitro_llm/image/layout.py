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

import re

from nitro_llm.image.errors import LayoutError

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


_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d{1,2}")


def entry_args(
    *,
    region: str | None = None,
    port: int | None = None,
    kms_proxy_port: int | None = None,
    model_name: str | None = None,
) -> tuple[str, ...]:
    """The entry module's arguments (``nitro_llm.enclave.main``): the config, then only the options
    given, so an image built without them has exactly the default command. ``--region`` is required
    on Nitro (the KMS endpoint), the ports are the vsock ones; all are measured with the command."""
    args = ["--config", f"/{CONFIG_PATH}"]
    if region is not None:
        if not _REGION.fullmatch(region):
            raise LayoutError(f"{region!r} is not an AWS region name such as eu-west-1")
        args += ["--region", region]
    if port is not None:
        args += ["--port", str(port)]
    if kms_proxy_port is not None:
        args += ["--kms-proxy-port", str(kms_proxy_port)]
    if model_name is not None:
        args += ["--model-name", model_name]
    return tuple(args)


def enclave_env() -> dict[str, str]:
    return {
        "PATH": "/usr/bin:/bin",
        "PYTHONPATH": f"/{APP_CODE}:/{SITE_PACKAGES}",
        "PYTHONDONTWRITEBYTECODE": "1",
        "PYTHONUNBUFFERED": "1",
        "PYTHONUTF8": "1",
    }
