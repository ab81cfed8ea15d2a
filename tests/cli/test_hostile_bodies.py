"""A hostile gateway cannot exhaust the client's memory: every body read from it is capped while it
streams. Real processes: the installed ``nitro-llm ask`` and ``nitro-llm proxy`` against a gateway on a
loopback port (the real gateway app and enclave, wrapped by a hostile layer) that offers 600 MB where
a few KB belong; each child's own peak memory is measured (its ``VmHWM``, see measured_cli.py), and
the server sees it hang up.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import time
import zlib
from functools import cache

import httpx
import pytest
from fastapi.responses import StreamingResponse
from peak_memory import MeasuredCommand

from nitro_llm.protocol.frame_codec import DEFAULT_MAX_FRAME_SIZE

OFFERED = 600  # MiB
BLOCK = b"\0" * (1 << 20)
PEAK_KIB = 200 * 1024  # far below the 600 MB offered (the unfixed client peaked at 1.27 GB)


@cache
def _gzip_bomb() -> list[bytes]:
    """600 MiB of zeros, gzip-compressed (about 600 KB on the wire)."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    out = [packer.compress(BLOCK) for _ in range(OFFERED)]
    out.append(packer.flush())
    return [piece for piece in out if piece]


class Hostile:
    """Wraps the gateway app: ``path`` is answered with an endless body of the given kind; everything
    else (the attestation, when ``path`` is /v1/infer) is relayed to the real gateway."""

    def __init__(self, path: str, kind: str) -> None:
        self.path, self.kind = path, kind
        self.served = 0

    def _blocks(self):
        if self.kind == "frame":  # one frame that declares just under the limit, then never ends
            self.served += 4
            yield (DEFAULT_MAX_FRAME_SIZE - 1).to_bytes(4, "big")
        pieces = _gzip_bomb() if self.kind == "gzip" else [BLOCK] * OFFERED
        for piece in pieces:
            self.served += len(piece)
            yield piece

    def __call__(self, app):
        async def hostile(scope, receive, send):
            if scope["type"] != "http" or scope["path"] != self.path:
                return await app(scope, receive, send)
            status = 503 if self.kind == "error" else 200
            headers = {"content-encoding": "gzip"} if self.kind == "gzip" else {}
            media = "application/json" if self.kind == "error" else "application/cbor"
            body = StreamingResponse(self._blocks(), status_code=status, media_type=media, headers=headers)
            await body(scope, receive, send)

        return hostile


CASES = [
    ("/v1/attestation", "plain", "attestation_too_large"),
    ("/v1/attestation", "gzip", "gateway_encoded_body"),
    ("/v1/attestation", "error", "http_503"),
    ("/v1/infer", "frame", "bad_frame"),
    ("/v1/infer", "error", "http_503"),
]


@pytest.mark.parametrize(("path", "kind", "code"), CASES, ids=[f"{p[4:]}-{k}" for p, k, _ in CASES])
def test_ask_hangs_up_on_an_endless_body_with_a_typed_error(stack, nitro_command, path, kind, code, tmp_path):
    hostile = Hostile(path, kind)
    stack(wrap=hostile)  # writes the client files: ask speaks attested to the wrapped gateway
    _command, env = nitro_command
    rc, peak, stderr = MeasuredCommand(["ask", "hi"], env, tmp_path / "peak").finish()
    assert rc == 2, stderr
    assert f"[{code}]" in stderr and "Traceback" not in stderr
    assert peak < PEAK_KIB, f"peak {peak} KiB"
    assert hostile.served < OFFERED << 20  # it hung up early


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_ready(url: str, proc: subprocess.Popen, seconds: float = 60) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if httpx.get(url + "/healthz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise AssertionError("the proxy did not start")


@pytest.mark.parametrize("kind", ["plain", "gzip"])
def test_the_proxy_process_hangs_up_on_an_endless_attestation(stack, nitro_command, kind, tmp_path):
    hostile = Hostile("/v1/attestation", kind)
    stack(wrap=hostile)
    _command, env = nitro_command
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proxy = MeasuredCommand(["proxy", "--protocol", "attested", "--port", str(port)], env, tmp_path / "peak")
    proc = proxy.proc
    try:
        _wait_ready(url, proc)
        verification = httpx.get(url + "/v1/verification", timeout=60).json()
        question = {"model": "default", "messages": [{"role": "user", "content": "hi"}]}
        refused = httpx.post(url + "/v1/chat/completions", json=question, timeout=60)
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)  # only the process this test started
    _rc, peak, stderr = proxy.finish()
    code = "attestation_too_large" if kind == "plain" else "gateway_encoded_body"
    assert verification["verified"] is False and code in verification["failure_reason"], verification
    assert refused.status_code >= 400 and code in json.dumps(refused.json())
    assert "BLOCKED" in stderr and "Traceback" not in stderr
    assert peak < PEAK_KIB, f"peak {peak} KiB"
    assert hostile.served < OFFERED << 20
