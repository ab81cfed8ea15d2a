"""An NSM reached over a socket: how an enclave in local mode asks the emulator outside it.

On Nitro the NSM is a device the hypervisor provides; the enclave can ask it for documents but never
holds its signing key. Local mode keeps that shape: the emulated NSM and its dev-CA key live in the
local stack (``nitro_llm_dev.nsm.server``), outside the enclave image, and the enclave sends it the
same CBOR requests it would write to ``/dev/nsm``, one length-prefixed frame per request. So the
image never contains a key that could sign an attestation document.
"""

from __future__ import annotations

import threading

from nitro_llm.attestation.errors import NsmError
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.transport import connect
from nitro_llm.transport.errors import TransportError

#: Requests are tiny (user data, nonce and public key are each capped at 1 KiB); documents are a few KiB.
MAX_NSM_FRAME = 64 * 1024
TIMEOUT_SECONDS = 10.0


class SocketTransport:
    """Moves NSM request bytes to a socket-served NSM and its answer back; one connection, serialised."""

    kind = "socket"

    def __init__(self, address: str, *, timeout: float = TIMEOUT_SECONDS) -> None:
        if not address:
            raise NsmError("the socket NSM needs an address", hint="pass --nsm-socket unix:/path/to/nsm.sock")
        self._address = address if ":" in address.split("/", 1)[0] else f"unix:{address}"
        self._timeout = timeout
        self._lock = threading.Lock()
        try:
            self._sock = connect(self._address, timeout=timeout)
        except TransportError as exc:
            raise NsmError(
                f"cannot reach the NSM at {self._address} ({exc.message})",
                hint="start the local stack's NSM emulator first ('nitro-llm up' does), or use --nsm device",
            ) from None

    def exchange(self, request: bytes) -> bytes:
        with self._lock:
            try:
                self._sock.sendall(encode_frame({"t": "nsm", "req": request}, max_size=MAX_NSM_FRAME))
                frame = read_frame(self._sock, max_size=MAX_NSM_FRAME)
            except (OSError, NitroLLMError) as exc:
                raise NsmError(f"the NSM at {self._address} failed: {exc}") from None
        if frame is None or not isinstance(frame.get("res"), bytes):
            raise NsmError(f"the NSM at {self._address} closed or sent no answer")
        return frame["res"]

    def close(self) -> None:
        self._sock.close()
