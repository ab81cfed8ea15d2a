"""The enclave, standing in: what the gateway sees of a running enclave over its link.

It answers ping (uptime, whether it holds credentials), credentials (ok) and attest (a document
signed by the emulated NSM with the PCRs of the EIF nitro-cli "ran", the client's nonce in it). It
runs no model and decrypts nothing: the supervision and deployment tests need a process that lives,
dies and wedges like an enclave, not inference.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import socket
import threading
import time
from pathlib import Path

from nitro_llm.protocol.frame_codec import encode_frame, read_frame


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--socket", required=True)
    parser.add_argument("--pcrs", required=True, help="JSON {index: hex}")
    parser.add_argument("--devca", required=True)
    args = parser.parse_args(argv)
    from nitro_llm_dev.nsm.devca import DevCA
    from nitro_llm_dev.nsm.emulated import EmulatedTransport

    pcrs = {int(k): bytes.fromhex(v) for k, v in json.loads(args.pcrs).items() if int(k) in (0, 1, 2)}
    nsm = EmulatedTransport(DevCA.load_or_create(Path(args.devca)), pcrs)
    started = time.monotonic()
    state = {"credentials": False}
    path = Path(args.socket)
    path.unlink(missing_ok=True)
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen(16)
    signal.signal(signal.SIGTERM, lambda *_: os._exit(0))

    def answer(frame: dict) -> dict:
        kind = frame.get("t")
        if kind == "ping":
            uptime = int(time.monotonic() - started)
            return {"t": "pong", "uptime_seconds": uptime, "has_credentials": state["credentials"]}
        if kind == "credentials":
            state["credentials"] = True
            return {"t": "ok"}
        if kind == "attest":
            descriptor = b"stand-in session descriptor"
            document = nsm.sign_document(nonce=frame["nonce"], user_data=hashlib.sha256(descriptor).digest())
            return {"t": "attestation", "document": document, "descriptor": descriptor}
        return {"t": "error", "code": "unexpected_frame", "message": "stand-in", "retryable": False}

    def serve(conn: socket.socket) -> None:
        with conn:
            while (frame := read_frame(conn)) is not None:
                conn.sendall(encode_frame(answer(frame)))

    while True:
        conn, _ = server.accept()
        threading.Thread(target=serve, args=(conn,), daemon=True).start()
