"""Faults injected into a running stack, each with what the client must see and how it recovers.

Every drill follows one pattern: start a request, break something at a known moment, check that the
client got a typed error (never a short answer passed off as whole), check that the system serves
again without anyone touching it, and check that the request caught in the fault cannot be
answered a second time by replaying its captured bytes.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Any

import httpx

from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.frame_codec import FrameDecoder
from nitro_llm_dev.bench.hostile_stack import HostileStack

LONG_ANSWER_WORDS = 3000
"""Echoed back as 3000 chunks: far more than the socket buffers hold, so a stalled link really
leaves the enclave blocked halfway through its answer."""
STREAMED_BEFORE_FAULT = 16 * 1024
"""Bytes of answer let through before the link stalls: the client is mid-stream when the fault hits."""


@dataclass
class DrillResult:
    name: str
    client_error: str | None = None
    chunks_before_error: int = 0
    chunks_expected: int = 0
    refused_while_down: dict[str, Any] = field(default_factory=dict)
    recovered: bool = False
    recovery_seconds: float = 0.0
    replay_code: str | None = None
    notes: dict[str, Any] = field(default_factory=dict)


def long_question() -> str:
    return " ".join(f"w{i:05d}" + "x" * 40 for i in range(LONG_ANSWER_WORDS))


class _Streamer(threading.Thread):
    """Reads one answer on a thread, so the drill can break things while it streams."""

    def __init__(self, conv: KmsConversation, question: str) -> None:
        super().__init__(daemon=True)
        self.conv = conv
        self.question = question
        self.chunks = 0
        self.final = False
        self.error: NitroLLMError | None = None

    def run(self) -> None:
        try:
            for chunk in self.conv.stream([{"role": "user", "content": self.question}], max_tokens=4096):
                self.chunks += 1
                self.final = self.final or chunk.final
        except NitroLLMError as exc:
            self.error = exc


def post_envelope(url: str, token: str, envelope: bytes) -> tuple[int, list[dict[str, Any]], dict[str, Any]]:
    """POST raw envelope bytes as a client would; (status, frames, JSON error body if any)."""
    r = httpx.post(
        f"{url}/v1/infer",
        content=envelope,
        headers={"authorization": f"Bearer {token}", "content-type": "application/cbor"},
        timeout=60,
    )
    if r.status_code != 200:
        return r.status_code, [], dict(r.json())
    decoder = FrameDecoder()
    frames = decoder.feed(r.content)
    decoder.close()
    return 200, frames, {}


def _replay(hs: HostileStack, envelope: bytes) -> str | None:
    status, frames, body = post_envelope(hs.gateway_url, hs.stack.api_token, envelope)
    if status != 200:
        return str(body.get("code"))
    if frames and frames[-1].get("t") == "error":
        return str(frames[-1].get("code"))
    return "ANSWERED"  # a replay answered: the drill fails on this


def _wait_blocked(hs: HostileStack, seconds: float = 1.0) -> None:
    """Give the enclave time to fill the stalled link (it answers 3000 chunks in far less)."""
    assert hs.proxy is not None
    deadline = time.monotonic() + 10
    while hs.proxy.open_connections == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    time.sleep(seconds)


def kill_enclave_midstream(hs: HostileStack) -> DrillResult:
    """SIGKILL the enclave halfway through an answer; while it is down the gateway must answer 503
    with Retry-After at once; the stack restarts it; the cut request's bytes replayed are refused."""
    assert hs.proxy is not None and hs.stack.supervisor is not None
    result = DrillResult("kill the enclave mid-stream", chunks_expected=LONG_ANSWER_WORDS + 1)
    conv = hs.conversation(faulty=True)
    streamer = _Streamer(conv, long_question())
    with hs.stack.supervisor.paused():
        hs.proxy.stall(after_bytes=STREAMED_BEFORE_FAULT)
        streamer.start()
        _wait_blocked(hs)
        hs.kill("enclave")
        killed_at = time.monotonic()
        hs.proxy.resume()
        streamer.join(60)
        result.client_error = streamer.error.code if streamer.error else None
        result.chunks_before_error = streamer.chunks
        result.notes["final_chunk_seen"] = streamer.final
        started = time.monotonic()
        r = httpx.post(
            f"{hs.gateway_url}/v1/infer",
            content=b"\x00sealed",
            headers={"authorization": f"Bearer {hs.stack.api_token}"},
            timeout=30,
        )
        health = httpx.get(f"{hs.gateway_url}/healthz", timeout=10)
        result.refused_while_down = {
            "status": r.status_code,
            "code": r.json().get("code"),
            "retry_after": r.headers.get("retry-after"),
            "seconds": round(time.monotonic() - started, 3),
            "healthz": health.status_code,
        }
    hs.wait_healthy(timeout=120)
    result.recovery_seconds = time.monotonic() - killed_at
    after = hs.conversation()
    result.recovered = after.ask([{"role": "user", "content": "back again?"}]) == "back again?"
    result.replay_code = _replay(hs, conv.last_wire.envelope)
    return result


def drop_link_midstream(hs: HostileStack) -> DrillResult:
    """Reset the gateway<->enclave connection halfway through an answer; the enclave lives on."""
    assert hs.proxy is not None
    result = DrillResult("drop the gateway-enclave link mid-stream", chunks_expected=LONG_ANSWER_WORDS + 1)
    conv = hs.conversation(faulty=True)
    streamer = _Streamer(conv, long_question())
    hs.proxy.stall(after_bytes=STREAMED_BEFORE_FAULT)
    streamer.start()
    _wait_blocked(hs, 0.5)
    cut_at = time.monotonic()
    result.notes["connections_cut"] = hs.proxy.cut()
    hs.proxy.resume()
    streamer.join(60)
    result.client_error = streamer.error.code if streamer.error else None
    result.chunks_before_error = streamer.chunks
    result.notes["final_chunk_seen"] = streamer.final
    again = hs.conversation(faulty=True)
    result.recovered = again.ask([{"role": "user", "content": "still there?"}]) == "still there?"
    result.recovery_seconds = time.monotonic() - cut_at
    result.replay_code = _replay(hs, conv.last_wire.envelope)
    return result


def kill_kms(hs: HostileStack) -> DrillResult:
    """SIGKILL the KMS emulator. A request that needs a key release gets a typed, retryable error
    after bounded retries; a new conversation fails on the client with a typed error; once the
    stack has restarted KMS the same conversation is answered."""
    assert hs.stack.supervisor is not None
    result = DrillResult("kill the KMS emulator")
    conv = hs.conversation()
    conv.seal([{"role": "user", "content": "key made while KMS was up"}])  # data key in hand, not yet used
    with hs.stack.supervisor.paused():
        hs.kill("kms-emulator")
        killed_at = time.monotonic()
        try:
            conv.ask([{"role": "user", "content": "needs a key release"}])
        except NitroLLMError as exc:
            result.client_error = exc.code
            result.notes["retryable"] = exc.retryable
        result.notes["enclave_gave_up_after_seconds"] = round(time.monotonic() - killed_at, 2)
        result.replay_code = None
        try:
            hs.conversation().ask([{"role": "user", "content": "new conversation"}])
            result.notes["new_conversation_error"] = None
        except NitroLLMError as exc:
            result.notes["new_conversation_error"] = exc.code
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            result.recovered = conv.ask([{"role": "user", "content": "KMS is back"}]) == "KMS is back"
            break
        except NitroLLMError as exc:
            if not exc.retryable:
                result.notes["error_after_restart"] = exc.code
                break
            time.sleep(0.5)
    result.recovery_seconds = time.monotonic() - killed_at
    result.replay_code = _replay(hs, conv.last_wire.envelope)
    return result
