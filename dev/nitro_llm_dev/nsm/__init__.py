"""The emulated NSM, its dev CA and the source-tree measurement: local mode's stand-in for Nitro hardware.

``open_emulated_nsm`` gives an in-process ``Nsm`` (for tests); ``server.NsmEmulatorServer`` serves the
same emulator on a Unix socket, which is how a local-mode enclave reaches it (the product's
``open_nsm("socket")``), so the dev CA key never enters the enclave's process or image.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path

from nitro_llm.attestation.errors import NsmError
from nitro_llm.attestation.nsm import Nsm
from nitro_llm.attestation.pcr import ZERO_PCR
from nitro_llm_dev.nsm.devca import DevCA
from nitro_llm_dev.nsm.emulated import EmulatedTransport

__all__ = ["emulated_transport", "open_emulated_nsm"]


def emulated_transport(
    *,
    ca: DevCA | None = None,
    ca_path: str | Path | None = None,
    pcrs: Mapping[int, bytes] | None = None,
    code_root: str | Path | None = None,
    model_path: str | Path | None = None,
    config: Mapping[str, object] | object | None = None,
    debug: bool = False,
    role_arn: str | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> EmulatedTransport:
    """An emulated NSM signing with ``ca`` (or the dev CA at ``ca_path``).

    It reports either the given ``pcrs`` (PCR0-2) or the measurement of ``code_root`` /
    ``model_path`` / ``config``; ``debug`` zeroes PCR0-2 either way, as the hardware does.
    """
    from nitro_llm_dev.nsm.measure import measure_enclave

    dev_ca = ca if ca is not None else DevCA.load_or_create(ca_path)
    if pcrs is None:
        if model_path is None:
            raise NsmError(
                "the emulated NSM needs the model it attests to",
                hint="pass model_path= (and config=) so PCR0-2 measure what the enclave runs, or pcrs=",
            )
        pcrs = measure_enclave(code_root, model_path, config if config is not None else {}, debug=debug)
    if debug:
        pcrs = {0: ZERO_PCR, 1: ZERO_PCR, 2: ZERO_PCR}
    return EmulatedTransport(dev_ca, pcrs, role_arn=role_arn, clock=clock)


def open_emulated_nsm(**kwargs: object) -> Nsm:
    """``Nsm`` over an in-process emulator; the arguments are ``emulated_transport``'s."""
    return Nsm(emulated_transport(**kwargs))  # type: ignore[arg-type]
