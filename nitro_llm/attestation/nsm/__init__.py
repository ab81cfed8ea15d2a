"""One NSM interface, two implementations: the real ``/dev/nsm`` and the local-mode emulator.

The rest of the code holds an ``Nsm`` and never asks which kind it has (the httpx transport pattern):
``Nsm`` encodes requests and decodes responses, a transport moves the CBOR bytes. The kind is chosen
once, from configuration, with ``open_nsm``; there is deliberately no "auto" that would fall back to
the emulator when the device is missing, because silently attesting with a dev key in production is
the failure this layer exists to prevent.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Literal, Protocol

from nitro_llm.attestation.errors import NsmError
from nitro_llm.attestation.nsm import messages
from nitro_llm.attestation.nsm.messages import NsmDescription, PcrDescription

if TYPE_CHECKING:
    from nitro_llm.attestation.devca import DevCA

__all__ = ["Nsm", "NsmDescription", "NsmTransport", "PcrDescription", "open_nsm"]


class NsmTransport(Protocol):
    kind: str

    def exchange(self, request: bytes) -> bytes: ...

    def close(self) -> None: ...


class Nsm:
    """Talk to a Nitro Secure Module. Use as a context manager or call ``close``."""

    def __init__(self, transport: NsmTransport) -> None:
        self._transport = transport

    @property
    def kind(self) -> str:
        """``"device"`` or ``"emulated"``: for logs and health output, not for branching."""
        return self._transport.kind

    def attest(
        self, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes:
        """A signed attestation document (COSE_Sign1 bytes) binding the given values."""
        request = messages.attestation_request(user_data=user_data, nonce=nonce, public_key=public_key)
        return messages.parse_attestation_response(self._transport.exchange(request))

    def describe(self) -> NsmDescription:
        return messages.parse_describe_nsm_response(self._transport.exchange(messages.describe_nsm_request()))

    def describe_pcr(self, index: int) -> PcrDescription:
        request = messages.describe_pcr_request(index)
        return messages.parse_describe_pcr_response(self._transport.exchange(request))

    def get_random(self) -> bytes:
        return messages.parse_get_random_response(self._transport.exchange(messages.get_random_request()))

    def close(self) -> None:
        self._transport.close()

    def __enter__(self) -> Nsm:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def open_nsm(
    kind: Literal["device", "emulated"],
    *,
    device_path: str = "/dev/nsm",
    ca: DevCA | None = None,
    ca_path: str | Path | None = None,
    pcrs: Mapping[int, bytes] | None = None,
    code_root: str | Path | None = None,
    model_path: str | Path | None = None,
    config: Mapping[str, object] | object | None = None,
    debug: bool = False,
    role_arn: str | None = None,
    clock: Callable[[], dt.datetime] | None = None,
) -> Nsm:
    """Open the NSM of the given kind.

    ``"device"`` opens ``device_path`` and raises ``NsmUnavailableError`` (with a hint) when it is
    missing. ``"emulated"`` signs with ``ca`` (a ``DevCA``) or the dev CA at ``ca_path`` (default
    ``state_dir()/dev-ca``), reporting either the given ``pcrs`` (PCR0-2) or the measurement of
    ``code_root`` / ``model_path`` / ``config``; ``debug`` zeroes PCR0-2 either way.
    """
    if kind == "device":
        from nitro_llm.attestation.nsm.device import DeviceTransport

        return Nsm(DeviceTransport(device_path))
    if kind == "emulated":
        from nitro_llm.attestation.devca import DevCA
        from nitro_llm.attestation.measure import measure_enclave
        from nitro_llm.attestation.nsm.emulated import EmulatedTransport
        from nitro_llm.attestation.pcr import ZERO_PCR

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
        return Nsm(EmulatedTransport(dev_ca, pcrs, role_arn=role_arn, clock=clock))
    raise NsmError(
        f"unknown NSM kind {kind!r}", hint='use "device" inside an enclave, "emulated" in local mode'
    )
