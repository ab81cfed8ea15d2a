"""The proxy's test doubles: an in-process backend, and a real uvicorn server around the app."""

import socket
import threading
import time

import pytest
import uvicorn

from nitro_llm.protocol.errors import ChunkReplayError
from nitro_llm.proxy.backend_seam import BackendChunk


class EchoBackend:
    """Answers with the user's last message, word by word: what the proxy must carry unchanged.

    For proxy tests only: it stands where the confidential protocols stand, and encrypts nothing.
    """

    model_id = "echo-test-model"

    def __init__(self, *, verified=True, fail_after=None, fail_before=False, delay=0.0, finish_reason="stop"):
        self.verified = verified
        self.finish_reason = finish_reason  # "length": as if max_tokens cut the answer
        self.fail_after = fail_after
        self.fail_before = fail_before
        self.delay = delay
        self.calls = []

    def stream(self, messages, *, max_tokens, temperature, seed, **named):
        self.calls.append(
            {
                "messages": messages,
                "max_tokens": max_tokens,
                "temperature": temperature,
                "seed": seed,
                **named,
            }
        )
        if self.fail_before:
            from nitro_llm.client.errors import GatewayUnreachable

            raise GatewayUnreachable("lost the gateway at http://gateway.test (ConnectError)")
        words = ("echo: " + messages[-1]["content"]).split(" ")
        for i, word in enumerate(words):
            if self.fail_after is not None and i == self.fail_after:
                raise ChunkReplayError("chunk 1 arrived again (expected 2)")
            if self.delay:
                time.sleep(self.delay)
            text = word if i == 0 else " " + word
            if i == len(words) - 1:
                usage = {"prompt_tokens": 7, "completion_tokens": len(words), "total_tokens": 7 + len(words)}
                yield BackendChunk(text, self.finish_reason, usage)
            else:
                yield BackendChunk(text)

    def describe(self):
        if not self.verified:
            return {
                "protocol": "attested",
                "verified": False,
                "failure_reason": "[attestation_pcr_mismatch] PCR0 differs from the policy",
                "pcrs": {},
                "model_digest": None,
                "verified_at": None,
            }
        return {
            "protocol": "attested",
            "verified": True,
            "verified_by": "this machine (client policy)",
            "failure_reason": None,
            "hpke_suite": "x25519",
            "model_digest": "9f" * 32,
            "pcrs": {"0": "a1" * 48, "1": "b2" * 48, "2": "c3" * 48},
            "verified_at": "2026-01-01T12:00:00+00:00",
            "valid_until": "2026-01-01T15:00:00+00:00",
            "module_id": "i-0123456789abcdef0-enc0123456789abcdef",
            "unsafe": ["UNSAFE dev root: documents signed by a local CA are accepted (local mode only)"],
        }


@pytest.fixture
def echo_backend():
    return EchoBackend


class RunningServer:
    def __init__(self, app):
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", 0))
        self.port = self._sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True
        )

    def __enter__(self):
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            if time.monotonic() > deadline or not self._thread.is_alive():
                raise RuntimeError("the proxy did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc):
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._sock.close()


@pytest.fixture
def serve():
    return RunningServer
