"""The enclave image's entrypoint: ``python3.11 -m nitro_llm.enclave.main --config PATH``.

The image's command runs this, as root, both inside a Nitro Enclave and in local mode's namespaces.
It reads the measured configuration the image was built with (its bytes are in PCR0/PCR2, so
nothing at launch can loosen it), detects its platform once (``boot.detect_platform``), prepares
the enclave as root and drops root (``boot.prepare``), then serves in this process
(``runtime.serve``): no CLI, no typer, nothing of the gateway or the client in the image.

Options other than ``--config`` are part of the image's measured command too (the builder writes
them into the ramdisk's ``cmd``): ``--region`` (required on Nitro), ``--port`` and
``--kms-proxy-port`` (the vsock ports on Nitro), ``--model-name`` (the label answers carry).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from nitro_llm.enclave.boot import DEFAULT_KMS_PROXY_PORT, DEFAULT_PORT, PlatformSettings
from nitro_llm.enclave.errors import EnclaveInitError
from nitro_llm.errors import NitroLLMError

if TYPE_CHECKING:
    from nitro_llm.attestation.nsm import Nsm
    from nitro_llm.enclave.config import EnclaveConfig

log = logging.getLogger("nitro_llm.enclave.main")

CONFIG_PATH = Path("/opt/nitro-llm/enclave.json")  # nitro_llm.image.layout.CONFIG_PATH
MODEL_PATH = Path("/opt/nitro-llm/model.gguf")  # nitro_llm.image.layout.MODEL_PATH
MODEL_DIGEST_FILE = Path("/opt/nitro-llm/model.gguf.sha256")  # written by the image build


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3.11 -m nitro_llm.enclave.main",
        description=__doc__.split("\n\n")[0],
        allow_abbrev=False,  # "--model" must not quietly mean "--model-name"
    )
    parser.add_argument("--config", type=Path, default=CONFIG_PATH, help="the measured config (JSON)")
    parser.add_argument("--region", help="AWS region of the KMS key (required on Nitro)")
    parser.add_argument("--port", type=int, default=DEFAULT_PORT, help="vsock port to serve on (Nitro)")
    parser.add_argument(
        "--kms-proxy-port", type=int, default=DEFAULT_KMS_PROXY_PORT, help="the parent's vsock-proxy port"
    )
    parser.add_argument("--model-name", help="the model's name in answers (default: from its digest)")
    return parser.parse_args(argv)


def load_config(path: Path, *, model_path: Path = MODEL_PATH, model_name: str | None = None) -> EnclaveConfig:
    """The measured config, exactly as built: the file must be the canonical JSON of what it loads to,
    so the digest the attested descriptor carries is the digest of this file."""
    from nitro_llm.enclave.config import canonical_config, config_from_measured

    try:
        raw = path.read_bytes()
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ValueError("not a JSON object")
        config = config_from_measured(data, model_path=model_path, model_name=model_name)
    except OSError as exc:
        raise EnclaveInitError(f"cannot read the enclave config {path} ({exc.strerror})") from None
    except (ValueError, TypeError) as exc:
        raise EnclaveInitError(
            f"the enclave config {path} is invalid ({exc})", hint="rebuild the image"
        ) from None
    if canonical_config(config.measured()) != raw:
        raise EnclaveInitError(
            f"the enclave config {path} is not the canonical JSON of its settings",
            hint="rebuild the image: the builder writes canonical_config(EnclaveConfig.measured())",
        )
    return config


def default_model_name(digest_file: Path = MODEL_DIGEST_FILE) -> str | None:
    """The packaged model's name when the image holds it (by its digest), else None (file stem)."""
    from nitro_llm.inference.model import DEFAULT_MODEL_NAME, DEFAULT_MODEL_SHA256

    try:
        digest = digest_file.read_text(encoding="ascii").split()[0].lower()
    except (OSError, IndexError, UnicodeDecodeError):
        return None
    return DEFAULT_MODEL_NAME if digest == DEFAULT_MODEL_SHA256 else None


def open_platform_nsm(settings: PlatformSettings) -> Nsm:
    from nitro_llm.attestation.nsm import open_nsm

    if settings.nsm_kind == "device":
        return open_nsm("device", device_path=settings.nsm_path)
    return open_nsm("socket", socket_path=settings.nsm_path)


def _stop_on_sigterm(*_: object) -> None:
    # Until runtime.serve installs its own handler (while the model loads). In local mode this process
    # is its PID namespace's init, which the kernel shields from signals it has no handler for.
    raise SystemExit(128 + signal.SIGTERM)


def run(args: argparse.Namespace) -> None:
    from nitro_llm.enclave import boot
    from nitro_llm.enclave.runtime import KmsSettings, serve

    config = load_config(args.config, model_name=args.model_name or default_model_name())
    settings = boot.detect_platform(args.region, args.port, args.kms_proxy_port)
    log.info("platform %s: listen %s, KMS %s via %s", settings.kind, settings.listen_address,
             settings.kms_endpoint, settings.kms_forward_to)  # fmt: skip
    boot.prepare(settings)
    nsm = open_platform_nsm(settings)
    # Debug mode is the hypervisor's choice (nitro-cli run-enclave --debug-mode), not the image's:
    # the NSM then reports all-zero PCRs, and the enclave says so in its stats.
    config = dataclasses.replace(config, debug_mode=not any(nsm.describe_pcr(0).data))
    serve(
        config,
        listen_address=settings.listen_address,
        kms=KmsSettings(
            endpoint=settings.kms_endpoint, region=settings.region, forward_to=settings.kms_forward_to
        ),
        nsm=nsm,
    )


def main(argv: list[str] | None = None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s enclave %(levelname)s %(message)s")
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    args = parse_args(argv)
    try:
        run(args)
    except NitroLLMError as exc:
        log.error("enclave failed to start [%s]: %s", exc.code, exc)
        return 1
    except Exception as exc:  # start-up only (serve handles requests): no question exists yet
        log.error("enclave failed to start: %s: %s", type(exc).__name__, exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
