"""The emulated NSM served on a Unix socket: the local enclave's ``/dev/nsm``.

The local stack runs this beside the enclave, never inside it: the enclave (from the image or the
source tree) opens ``unix:PATH`` through the product's ``open_nsm("socket")`` and sends the same CBOR
requests it would write to the device. Like the hypervisor, the server reports the PCRs of what the
stack started, which the stack computed before starting it (an image's manifest, or a source
tree's measurement), so a changed byte in what runs changes what KMS sees.
"""

from __future__ import annotations

import contextlib
import logging
import socket
import threading
from pathlib import Path

from nitro_llm.attestation.nsm.socket_link import MAX_NSM_FRAME
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.transport import close_listener, listen
from nitro_llm_dev.nsm.emulated import EmulatedTransport

log = logging.getLogger(__name__)


class NsmEmulatorServer:
    """Accepts connections on ``unix:PATH`` and answers each NSM request frame with the emulator."""

    def __init__(self, transport: EmulatedTransport, path: Path) -> None:
        self._transport = transport
        self.path = path
        self.address = f"unix:{path}"
        self._listener: socket.socket | None = None
        self._stopped = threading.Event()

    def start(self) -> NsmEmulatorServer:
        self._listener = listen(self.address)
        threading.Thread(target=self._accept, name="nsm-emulator", daemon=True).start()
        return self

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return  # closed by stop()
            threading.Thread(target=self._serve, args=(conn,), name="nsm-conn", daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            while not self._stopped.is_set():
                try:
                    frame = read_frame(conn, max_size=MAX_NSM_FRAME)
                    if frame is None:
                        return
                    request = frame.get("req")
                    if frame.get("t") != "nsm" or not isinstance(request, bytes):
                        log.warning("NSM emulator: a frame that is not an NSM request; closing")
                        return
                    answer = self._transport.exchange(request)
                    conn.sendall(encode_frame({"t": "nsm", "res": answer}, max_size=MAX_NSM_FRAME))
                except (OSError, NitroLLMError) as exc:
                    log.warning("NSM emulator connection ended: %s", type(exc).__name__)
                    return

    def stop(self) -> None:
        self._stopped.set()
        if self._listener is not None:
            with contextlib.suppress(OSError):
                self._listener.shutdown(socket.SHUT_RDWR)  # wakes the accepting thread on Linux
            close_listener(self._listener, self.address)
            self._listener = None
