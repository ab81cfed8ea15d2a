import socket
import struct
import threading
import time

import cbor2
import pytest

from nitro_llm.attestation import parse_document
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.errors import EnclaveReportedError
from nitro_llm.protocol.frame_codec import encode_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope
from nitro_llm.transport import connect
from nitro_llm_dev.engines.echo import EchoEngine

QUESTION = "Patient Jane Roe, MRN 4471-CANARY-9c2f, reports chest pain since Tuesday"


def _error_code(replies):
    assert replies[-1]["t"] == "error", replies
    return replies[-1]["code"]


def test_valid_request_streams_a_sealed_answer(enclave, conversation):
    enclave.give_credentials()
    header, envelope = conversation.seal([{"role": "user", "content": QUESTION}])
    replies = enclave.call(frame_kinds.infer_frame(envelope.to_cbor()))
    assert len(replies) > 5 and all(f["t"] == "chunk" for f in replies)
    assert [f["seq"] for f in replies] == list(range(len(replies)))
    assert [f["final"] for f in replies] == [False] * (len(replies) - 1) + [True]
    assert all(b"CANARY" not in f["ct"] for f in replies)  # sealed, not plain
    assert conversation.read_answer(header, replies) == QUESTION
    call = enclave.kms.calls[0]
    assert call["EncryptionContext"] == {"nitro-llm:conversation": conversation.conversation_id}
    assert call["Recipient"]["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"


def test_twenty_kb_question(enclave, conversation):
    enclave.give_credentials()
    question = ("word " * 4000).strip() + " end"
    assert len(question) > 20_000
    assert conversation.ask(enclave, question, max_tokens=4096) == question


def test_the_recipient_key_is_made_once(enclave, new_conversation):
    enclave.give_credentials()
    for _ in range(2):
        new_conversation(enclave.kms).ask(enclave, "hi")
    keys = {parse_document(c["Recipient"]["AttestationDocument"]).public_key for c in enclave.kms.calls}
    assert len(enclave.kms.calls) == 2 and len(keys) == 1


def _malformed_frames(valid_envelope: KmsEnvelope):
    """100 ways to be wrong, cycling through kinds of damage."""
    good = valid_envelope.to_map()
    tampered_ct = {**good, "ct": good["ct"][:-1] + bytes([good["ct"][-1] ^ 1])}
    bad_header = {**good, "header": {**good["header"], "timestamp": "yesterday"}}
    kinds = [
        b"\xff\xff\xff\xff",  # announces 4 GiB
        struct.pack(">I", 100) + b"\xa1",  # truncated
        b"\x00\x00",  # truncated length
        struct.pack(">I", 3) + b"\xff\xfe\xfd",  # not CBOR
        encode_frame({"t": "nope"}),
        struct.pack(">I", 2) + cbor2.dumps([1]),  # not a map
        encode_frame({"t": "infer"}),
        encode_frame({"t": "infer", "envelope": b"\x00garbage"}),
        encode_frame({"t": "infer", "envelope": cbor2.dumps(bad_header)}),
        encode_frame({"t": "infer", "envelope": cbor2.dumps(tampered_ct)}),
        encode_frame({"t": "credentials", "access_key_id": 1}),
        encode_frame({"t": "ping", "extra": True}),
        struct.pack(">I", 0),
    ]
    return [kinds[i % len(kinds)] for i in range(100)]


def test_hundred_malformed_frames_then_a_valid_request(enclave, conversation):
    enclave.give_credentials()
    header, envelope = conversation.seal([{"role": "user", "content": QUESTION}])
    codes = []
    for data in _malformed_frames(envelope):
        try:
            replies = enclave.call_raw(data)
        except (ConnectionResetError, BrokenPipeError):  # hung up on bytes it never read: it is alive
            continue
        if replies:  # every reply to a bad frame is one typed error frame
            assert len(replies) == 1
            frame_kinds.read_error(replies[0])
            codes.append(replies[0]["code"])
            assert "CANARY" not in replies[0]["message"]
    assert {"frame_too_large", "frame_truncated", "bad_frame", "bad_envelope", "decrypt_failed"} <= set(codes)
    assert (
        conversation.read_answer(header, enclave.call(frame_kinds.infer_frame(envelope.to_cbor())))
        == QUESTION
    )
    assert enclave.stats()["errors"] >= 90


def test_stale_future_and_pre_start_timestamps_refused(enclave, conversation):
    enclave.give_credentials()
    now = time.time_ns() // 1_000_000
    for ts in (now - 121_000, now + 121_000, now - 5_000):  # the last predates the server's start
        with pytest.raises(EnclaveReportedError) as err:
            conversation.ask(enclave, "hi", timestamp_ms=ts)
        assert err.value.code == "stale_request" and err.value.retryable
    assert enclave.kms.calls == []  # refused before any KMS call
    assert conversation.ask(enclave, "fresh") == "fresh"


def test_replayed_request_id_refused(enclave, conversation):
    enclave.give_credentials()
    header, envelope = conversation.seal([{"role": "user", "content": "once"}])
    frame = frame_kinds.infer_frame(envelope.to_cbor())
    assert conversation.read_answer(header, enclave.call(frame)) == "once"
    assert _error_code(enclave.call(frame)) == "replayed_request"
    # a new envelope reusing the request id is refused too, before KMS is asked
    _, again = conversation.seal([{"role": "user", "content": "twice"}], request_id=header.request_id)
    assert _error_code(enclave.call(frame_kinds.infer_frame(again.to_cbor()))) == "replayed_request"
    assert len(enclave.kms.calls) == 1


def test_forgery_does_not_burn_the_request_id(enclave, conversation):
    """An unauthenticated envelope must not claim the id: the genuine one still gets its answer."""
    enclave.give_credentials()
    header, envelope = conversation.seal([{"role": "user", "content": "genuine"}])
    forged = KmsEnvelope(envelope.header, envelope.edk, envelope.nonce, bytes(len(envelope.ct)))
    assert _error_code(enclave.call(frame_kinds.infer_frame(forged.to_cbor()))) == "decrypt_failed"
    assert (
        conversation.read_answer(header, enclave.call(frame_kinds.infer_frame(envelope.to_cbor())))
        == "genuine"
    )


def test_ten_turn_chat_costs_one_kms_decrypt(enclave, conversation):
    enclave.give_credentials()
    before = enclave.stats()["kms_decrypt_calls"]
    messages = []
    for turn in range(10):
        messages.append({"role": "user", "content": f"turn {turn}"})
        header, envelope = conversation.seal(messages)
        answer = conversation.read_answer(header, enclave.call(frame_kinds.infer_frame(envelope.to_cbor())))
        assert answer == f"turn {turn}"
        messages.append({"role": "assistant", "content": answer})
    stats = enclave.stats()
    assert stats["kms_decrypt_calls"] - before == 1
    assert stats["data_key_cache_hits"] == 9
    assert len(enclave.kms.calls) == 1


def test_without_cache_every_turn_asks_kms(make_enclave, new_conversation):
    enclave = make_enclave(config=EnclaveConfig(engine="echo", data_key_ttl_seconds=0))
    enclave.give_credentials()
    conv = new_conversation(enclave.kms)
    for i in range(3):
        conv.ask(enclave, f"q{i}")
    assert enclave.stats()["kms_decrypt_calls"] == 3


def test_cache_is_per_conversation(enclave, new_conversation):
    enclave.give_credentials()
    a, b = new_conversation(enclave.kms), new_conversation(enclave.kms)
    a.ask(enclave, "a1")
    b.ask(enclave, "b1")
    a.ask(enclave, "a2")
    assert enclave.stats()["kms_decrypt_calls"] == 2
    # a's encrypted data key presented under b's conversation id: KMS is asked (and refuses)
    _, env = b.seal([{"role": "user", "content": "x"}])
    swapped = KmsEnvelope(env.header, a.edk, env.nonce, env.ct)
    assert _error_code(enclave.call(frame_kinds.infer_frame(swapped.to_cbor()))) == "kms_denied"


def test_no_credentials_then_credentials(enclave, conversation):
    assert enclave.stats()["has_credentials"] is False
    with pytest.raises(EnclaveReportedError) as err:
        conversation.ask(enclave, "hi")
    assert err.value.code == "no_credentials" and err.value.retryable
    enclave.give_credentials()
    assert enclave.stats()["has_credentials"] is True
    assert conversation.ask(enclave, "hi") == "hi"


@pytest.mark.parametrize("code", ["AccessDeniedException", "InvalidCiphertextException"])
def test_kms_denial_is_typed_and_not_retryable(enclave, conversation, code):
    enclave.give_credentials()
    enclave.kms.deny = code
    with pytest.raises(EnclaveReportedError) as err:
        conversation.ask(enclave, "hi")
    assert err.value.code == "kms_denied" and not err.value.retryable and code in err.value.message


def test_kms_throttling_is_retryable(enclave, conversation):
    enclave.give_credentials()
    enclave.kms.deny = "ThrottlingException"
    with pytest.raises(EnclaveReportedError) as err:
        conversation.ask(enclave, "hi")
    assert err.value.code == "kms_unavailable" and err.value.retryable


def test_plaintext_key_from_kms_is_refused(enclave, conversation):
    enclave.give_credentials()
    enclave.kms.plaintext_too = True
    with pytest.raises(EnclaveReportedError) as err:
        conversation.ask(enclave, "hi")
    assert err.value.code == "kms_denied"


def test_model_and_request_schema_checked(enclave, conversation):
    enclave.give_credentials()
    with pytest.raises(EnclaveReportedError) as err:
        conversation.ask(enclave, "hi", model="gpt-5")
    assert err.value.code == "model_not_served"
    assert conversation.ask(enclave, "hi", model="echo") == "hi"


def test_busy_when_the_queue_is_full(make_enclave, new_conversation):
    enclave = make_enclave(
        config=EnclaveConfig(engine="echo", max_waiting=0), engine=EchoEngine(delay_seconds=0.2)
    )
    enclave.give_credentials()
    slow, fast = new_conversation(enclave.kms), new_conversation(enclave.kms)
    fast.ask(enclave, "warm")  # data key cached: the next ask goes straight to the queue
    results = {}
    t = threading.Thread(target=lambda: results.setdefault("slow", slow.ask(enclave, "one two three four")))
    t.start()
    deadline = time.monotonic() + 5
    while enclave.stats()["queued"] == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    with pytest.raises(EnclaveReportedError) as err:
        fast.ask(enclave, "no room")
    assert err.value.code == "enclave_busy" and err.value.retryable
    t.join(10)
    assert results["slow"] == "one two three four"
    assert fast.ask(enclave, "room now") == "room now"


def test_client_disconnect_mid_answer_frees_the_model(make_enclave, new_conversation):
    enclave = make_enclave(engine=EchoEngine(delay_seconds=0.05))
    enclave.give_credentials()
    conv = new_conversation(enclave.kms)
    _, envelope = conv.seal([{"role": "user", "content": " ".join(["w"] * 200)}], max_tokens=200)
    with connect(enclave.address, 5) as sock:
        sock.sendall(encode_frame(frame_kinds.infer_frame(envelope.to_cbor())))
        sock.recv(10)  # the answer has started
    started = time.monotonic()
    assert conv.ask(enclave, "next") == "next"
    assert time.monotonic() - started < 5  # did not wait for 200 tokens * 50 ms


def test_logs_and_errors_carry_no_content(enclave, conversation, caplog):
    caplog.set_level("DEBUG")
    enclave.give_credentials()
    conversation.ask(enclave, QUESTION)
    header, envelope = conversation.seal([{"role": "user", "content": QUESTION}])
    enclave.call(
        frame_kinds.infer_frame(
            KmsEnvelope(header, envelope.edk, envelope.nonce, envelope.ct[:-1] + b"\x00").to_cbor()
        )
    )
    text = caplog.text
    assert "CANARY" not in text and "secret" not in text
    assert header.request_id in text  # logs do name request ids


def test_pong_reports_counters_without_content(enclave, conversation):
    enclave.give_credentials()
    conversation.ask(enclave, "hi")
    stats = enclave.stats()
    assert stats["model"] == "echo" and stats["engine"] == "echo"
    assert stats["requests"] == 1 and stats["answered"] == 1 and stats["kms_decrypt_calls"] == 1


def test_server_survives_a_silent_client(make_enclave, new_conversation):
    """Peers that connect and send nothing do not stop others from being served."""
    enclave = make_enclave()
    enclave.give_credentials()
    idle = [connect(enclave.address, 5) for _ in range(3)]
    try:
        assert new_conversation(enclave.kms).ask(enclave, "still here") == "still here"
    finally:
        for s in idle:
            s.close()


def test_unknown_type_is_not_echoed(enclave):
    replies = enclave.call({"t": "CANARY-type"})
    assert _error_code(replies) == "bad_frame" and "CANARY" not in replies[0]["message"]


def test_infer_frames_go_to_the_protocol_they_name(enclave, conversation):
    enclave.give_credentials()
    header, envelope = conversation.seal([{"role": "user", "content": "named"}])
    named = frame_kinds.infer_frame(envelope.to_cbor(), protocol="kms")
    assert conversation.read_answer(header, enclave.call(named)) == "named"
    # this enclave runs without the attested protocol: a frame naming it is refused, typed
    _, other = conversation.seal([{"role": "user", "content": "mislabelled"}])
    assert _error_code(enclave.call(frame_kinds.infer_frame(other.to_cbor(), protocol="attested"))) == (
        "unknown_protocol"
    )


@pytest.mark.parametrize("where", ["frame", "envelope"])
def test_unknown_protocol_is_a_typed_error_and_the_enclave_keeps_serving(enclave, conversation, where):
    enclave.give_credentials()
    _, envelope = conversation.seal([{"role": "user", "content": QUESTION}])
    if where == "frame":
        frame = frame_kinds.infer_frame(envelope.to_cbor(), protocol="CANARY-proto")
    else:
        frame = frame_kinds.infer_frame(cbor2.dumps({**envelope.to_map(), "protocol": "CANARY-proto"}))
    (reply,) = enclave.call(frame)
    error = frame_kinds.read_error(reply)
    assert error.code == "unknown_protocol" and not error.retryable
    assert "CANARY" not in reply["message"] and "kms" in reply["hint"]
    assert conversation.ask(enclave, "still serving") == "still serving"


def test_an_old_kms_envelope_version_is_refused_with_its_own_code(enclave, conversation):
    enclave.give_credentials()
    _, envelope = conversation.seal([{"role": "user", "content": "v1"}])
    old = cbor2.dumps({**envelope.to_map(), "v": 1})
    assert _error_code(enclave.call(frame_kinds.infer_frame(old))) == "unsupported_envelope_version"
    assert enclave.kms.calls == []  # refused before any KMS call


def test_half_open_peer_gets_error_not_hang(enclave):
    with connect(enclave.address, 5) as sock:
        sock.sendall(struct.pack(">I", 50) + b"\xa1")
        sock.shutdown(socket.SHUT_WR)
        reply = sock.recv(4096)
    assert reply  # an error frame, sent before closing
