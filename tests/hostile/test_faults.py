"""Hostile inputs and faults against the real processes (KMS emulator, enclave, gateways)."""

from __future__ import annotations

import dataclasses
import socket
import time

import pytest

from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.frame_codec import encode_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope, KmsHeader, new_id, seal_request
from nitro_llm.protocol.messages import chat_request
from nitro_llm_dev.bench import fault_drills
from nitro_llm_dev.bench.fault_drills import post_envelope
from nitro_llm_dev.bench.frame_fuzz import fuzz_enclave, send_one
from nitro_llm_dev.bench.hostile import _drill_failures
from nitro_llm_dev.bench.procstat import rss_bytes

pytestmark = pytest.mark.slow

MB = 1 << 20


def refusal(hs, envelope: bytes) -> str:
    """The code a sealed envelope sent through the gateway is refused with (or ANSWERED)."""
    status, replies, body = post_envelope(hs.gateway_url, hs.stack.api_token, envelope)
    if status != 200:
        return f"{status}:{body.get('code')}"
    if replies and replies[-1]["t"] == "error":
        return str(replies[-1]["code"])
    assert replies and replies[-1].get("final") is True
    return "ANSWERED"


def sealed(conv, text: str, **header_changes) -> bytes:
    """A request of ``conv``'s conversation, sealed with its data key, header fields overridden."""
    header = KmsHeader.new(model="default", conversation_id=conv.conversation_id, key_id=conv.config.key_id)
    header = dataclasses.replace(header, **header_changes)
    request = chat_request([{"role": "user", "content": text}])
    return seal_request(conv._data_key, header, request, edk=conv._edk).to_cbor()


def test_ten_thousand_random_frames_leave_the_enclave_serving(hostile_stack):
    hs = hostile_stack
    pid = hs.stack.enclave_proc.pid
    conv = hs.conversation()
    assert conv.ask([{"role": "user", "content": "before"}]) == "before"
    rss_before = rss_bytes(pid)

    def fresh() -> bytes:
        return conv.seal([{"role": "user", "content": "to be damaged"}])[1].to_cbor()

    result = fuzz_enclave(f"unix:{hs.stack.enclave_socket}", fresh, count=10_000, seed=7)
    assert result.sent == 10_000
    assert result.answered_forgeries == 0
    assert result.typed_errors + result.hangups + result.other_replies == result.sent
    assert result.typed_errors > 5_000
    assert {"bad_frame", "frame_truncated", "frame_too_large", "bad_envelope", "decrypt_failed"} <= set(
        result.codes
    )
    assert hs.stack.enclave_proc.pid == pid and hs.stack.enclave_proc.alive(), "the enclave restarted"
    assert conv.ask([{"role": "user", "content": "after"}]) == "after"
    assert rss_bytes(pid) - rss_before < 64 * MB


def test_replay_stale_swapped_context_bit_flips_and_bad_framing(hostile_stack):
    hs = hostile_stack
    conv = hs.conversation()
    conv.seal([{"role": "user", "content": "make the data key"}])
    now = time.time_ns() // 1_000_000

    captured = sealed(conv, "answered once")
    assert refusal(hs, captured) == "ANSWERED"
    assert refusal(hs, captured) == "replayed_request"

    assert refusal(hs, sealed(conv, "old", timestamp=now - 10 * 60_000)) == "stale_request"
    assert refusal(hs, sealed(conv, "future", timestamp=now + 10 * 60_000)) == "stale_request"

    # the same data key presented under another conversation: KMS must refuse the context
    swapped = KmsEnvelope.from_cbor(sealed(conv, "swapped"))
    other = dataclasses.replace(swapped.header, conversation_id=new_id(), request_id=new_id())
    assert refusal(hs, dataclasses.replace(swapped, header=other).to_cbor()) == "kms_denied"

    for bit in range(0, 96, 8):  # ciphertext, nonce: every flip is caught, none burns the request id
        envelope = KmsEnvelope.from_cbor(sealed(conv, f"flip {bit}"))
        ct = bytearray(envelope.ct)
        ct[bit // 8 % len(ct)] ^= 1 << (bit % 8)
        assert refusal(hs, dataclasses.replace(envelope, ct=bytes(ct)).to_cbor()) == "decrypt_failed"
        assert refusal(hs, envelope.to_cbor()) == "ANSWERED"  # the genuine one is still answered

    whole = sealed(conv, "truncated")
    assert refusal(hs, whole[: len(whole) // 2]) == "bad_envelope"
    host, port = hs.gateway_url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(
            f"POST /v1/infer HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {hs.stack.api_token}\r\n"
            f"content-length: {9 << 20}\r\n\r\n".encode()
        )
        assert sock.recv(65536).startswith(b"HTTP/1.1 413")  # refused on the declared size alone

    address = f"unix:{hs.stack.enclave_socket}"
    frame = encode_frame(frame_kinds.infer_frame(sealed(conv, "cut frame")))
    (reply,) = send_one(address, frame[:-7], timeout=30)
    assert frame_kinds.read_error(reply).code == "frame_truncated"
    replies = send_one(address, b"\x7f\xff\xff\xff" + b"x" * 100, timeout=30)
    assert replies is None or frame_kinds.read_error(replies[0]).code == "frame_too_large"
    assert conv.ask([{"role": "user", "content": "still serving"}]) == "still serving"


def test_enclave_killed_mid_stream(hostile_stack):
    result = fault_drills.kill_enclave_midstream(hostile_stack)
    assert result.client_error == "enclave_unavailable"
    assert 0 < result.chunks_before_error < result.chunks_expected
    assert not result.notes["final_chunk_seen"]
    down = result.refused_while_down
    assert down["status"] == 503 and down["code"] == "enclave_unavailable" and int(down["retry_after"]) >= 1
    assert down["seconds"] < 1.0 and down["healthz"] == 503
    assert result.recovered and result.recovery_seconds < 60
    assert result.replay_code == "stale_request"  # stamped before the new enclave started
    assert _drill_failures(result) == []
    assert hostile_stack.stack.supervisor.restarts("enclave") >= 1


def test_gateway_enclave_link_dropped_mid_stream(hostile_stack):
    result = fault_drills.drop_link_midstream(hostile_stack)
    assert result.client_error == "enclave_unavailable"
    assert 0 < result.chunks_before_error < result.chunks_expected
    assert result.notes["connections_cut"] >= 1
    assert result.recovered
    assert result.replay_code == "replayed_request"  # the enclave lived: its replay guard remembers
    assert _drill_failures(result) == []


def test_kms_emulator_killed(hostile_stack):
    result = fault_drills.kill_kms(hostile_stack)
    assert result.client_error == "kms_unavailable" and result.notes["retryable"] is True
    assert result.notes["enclave_gave_up_after_seconds"] < 30  # bounded retries, not a hang
    assert result.notes["new_conversation_error"] == "client_kms_unreachable"
    assert result.recovered
    assert result.replay_code == "replayed_request"
    assert _drill_failures(result) == []
