"""One NSM interface, two transports: the real ``/dev/nsm`` and a Unix socket to local mode's emulator.

The rest of the code holds an ``Nsm`` and never asks which kind it has (the httpx transport pattern):
``Nsm`` encodes requests and decodes responses, a transport moves the CBOR bytes. The kind is chosen
once, from configuration, with ``open_nsm``; there is deliberately no "auto" that would fall back to
an emulator when the device is missing, because silently attesting with a dev key in production is
the failure this layer exists to prevent.
"""

from __future__ import annotations

from types import TracebackType
from typing import Literal, Protocol

from nitro_llm.attestation.errors import NsmError
from nitro_llm.attestation.nsm import messages
from nitro_llm.attestation.nsm.messages import NsmDescription, PcrDescription

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
    kind: Literal["device", "socket"], *, device_path: str = "/dev/nsm", socket_path: str = ""
) -> Nsm:
    """Open the NSM of the given kind.

    ``"device"`` opens ``device_path`` (``/dev/nsm`` inside a Nitro Enclave) and raises
    ``NsmUnavailableError`` with a hint when it is missing. ``"socket"`` reaches an NSM served on a
    Unix socket outside this process: local mode's emulator (``nitro_llm_dev.nsm``), which holds the
    dev CA key so that the enclave image never does. There is no emulated kind here on purpose: the
    product cannot sign documents, only ask the NSM it is given.
    """
    if kind == "device":
        from nitro_llm.attestation.nsm.device import DeviceTransport

        return Nsm(DeviceTransport(device_path))
    if kind == "socket":
        from nitro_llm.attestation.nsm.socket_link import SocketTransport

        return Nsm(SocketTransport(socket_path))
    raise NsmError(
        f"unknown NSM kind {kind!r}", hint='use "device" inside an enclave, "socket" in local mode'
    )
