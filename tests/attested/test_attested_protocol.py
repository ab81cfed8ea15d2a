"""The attested protocol end to end in memory: both suites, every field tampered, chunk order attacks."""

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import x25519
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nitro_llm.protocol import attested
from nitro_llm.protocol.attested import (
    AttestedEnvelope,
    EnclaveSession,
    ResponseOpener,
    ResponseSealer,
    SessionDescriptor,
    decode_attestation_bundle,
    descriptor_hash,
    encode_attestation_bundle,
    new_conversation,
    seal_request,
)
from nitro_llm.protocol.attested_errors import (
    AttestedEnvelopeError,
    DescriptorError,
    HpkeOpenError,
    ResponseKeyError,
    UnknownDescriptorError,
)
from nitro_llm.protocol.errors import (
    ChunkAfterFinalError,
    ChunkGapError,
    ChunkReplayError,
    DecryptionFailedError,
    EnvelopeError,
    FrameError,
    RequestSchemaError,
    ResponseTruncatedError,
)
from nitro_llm.protocol.hpke_suite import SUITES
from nitro_llm.protocol.padding import CHUNK_BUCKETS, REQUEST_BUCKETS, pad, unpad

MODEL = hashlib.sha256(b"model.gguf").hexdigest()
CONFIG = hashlib.sha256(b"config").hexdigest()
REQUEST = {"messages": [{"role": "user", "content": "my MRN is 12345"}], "max_tokens": 8, "temperature": 0.0}
RID = "ab" * 16


@pytest.fixture(params=SUITES)
def session(request):
    return EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite=request.param)


def _client_view(session):
    """What a client holds after verification: the descriptor parsed from the bytes it received."""
    return SessionDescriptor.from_cbor(session.descriptor_bytes)


def _final(text=""):
    return {"text": text, "finish_reason": "stop", "usage": {"prompt_tokens": 3, "completion_tokens": 2}}


# --- descriptor ------------------------------------------------------------------------------


def test_descriptor_round_trip_and_hash_is_user_data(session):
    descriptor = _client_view(session)
    assert descriptor == session.descriptor
    assert session.user_data() == hashlib.sha256(session.descriptor_bytes).digest()
    assert descriptor.digest() == descriptor_hash(session.descriptor_bytes) == session.descriptor_hash
    raw = cbor2.loads(session.descriptor_bytes)
    assert set(raw) == {"protocol_version", "hpke_suite", "hpke_public_key", "model_digest", "config_digest"}
    assert raw["hpke_suite"] == session.suite and raw["model_digest"] == MODEL


def test_descriptor_public_key_sizes():
    sizes = {}
    for suite in SUITES:
        s = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite=suite)
        sizes[suite] = len(s.descriptor.hpke_public_key)
    assert sizes == {"x25519": 32, "mlkem768-x25519": 1184 + 32}


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("protocol_version", 2),
        ("protocol_version", True),
        ("hpke_suite", "p256"),
        ("hpke_public_key", b"\x00" * 31),
        ("hpke_public_key", "not bytes"),
        ("model_digest", "A" * 64),
        ("model_digest", "0" * 63),
        ("config_digest", None),
    ],
)
def test_descriptor_bad_fields_refused(session, field, value):
    raw = cbor2.loads(session.descriptor_bytes)
    raw[field] = value
    with pytest.raises(DescriptorError):
        SessionDescriptor.from_cbor(cbor2.dumps(raw, canonical=True))


def test_descriptor_extra_missing_and_noncanonical_refused(session):
    raw = cbor2.loads(session.descriptor_bytes)
    with pytest.raises(DescriptorError):
        SessionDescriptor.from_cbor(cbor2.dumps({**raw, "extra": 1}, canonical=True))
    del raw["config_digest"]
    with pytest.raises(DescriptorError):
        SessionDescriptor.from_cbor(cbor2.dumps(raw, canonical=True))
    # Same content, other key order: a second encoding would mean a second hash for one descriptor.
    reordered = dict(reversed(list(cbor2.loads(session.descriptor_bytes).items())))
    assert cbor2.loads(cbor2.dumps(reordered)) == cbor2.loads(session.descriptor_bytes)
    with pytest.raises(DescriptorError, match="canonical"):
        SessionDescriptor.from_cbor(cbor2.dumps(reordered))


def test_hybrid_public_key_with_invalid_mlkem_encoding_refused():
    s = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite="mlkem768-x25519")
    raw = cbor2.loads(s.descriptor_bytes)
    raw["hpke_public_key"] = b"\xff" * 1216  # coefficients above q: not a valid ML-KEM encapsulation key
    with pytest.raises(DescriptorError, match="not a valid encoding"):
        SessionDescriptor.from_cbor(cbor2.dumps(raw, canonical=True))


def test_attestation_bundle_round_trip_and_strictness():
    body = encode_attestation_bundle(b"doc", b"desc")
    assert decode_attestation_bundle(body) == (b"doc", b"desc")
    for bad in (
        {"v": 1, "document": b"doc"},
        {"v": 2, "document": b"doc", "descriptor": b"d"},
        {"v": 1, "document": "doc", "descriptor": b"d"},
        {"v": 1, "document": b"doc", "descriptor": b""},
        {"v": 1, "document": b"d" * 70000, "descriptor": b"d"},
    ):
        with pytest.raises(DescriptorError):
            decode_attestation_bundle(cbor2.dumps(bad))


# --- request ---------------------------------------------------------------------------------


def test_request_round_trip(session):
    sealed = seal_request(_client_view(session), REQUEST)
    body = sealed.envelope.to_cbor()
    opened = session.open_request(body)
    assert opened.request.to_dict() == REQUEST
    assert opened.request_id == sealed.request_id and opened.timestamp == sealed.timestamp
    assert opened.response_key == sealed.response_key and len(opened.response_key) == 32
    assert b"MRN" not in body and b"12345" not in body
    env = cbor2.loads(body)
    assert set(env) == {"v", "protocol", "suite", "descriptor_hash", "enc", "ct"}
    assert env["protocol"] == "attested" and env["suite"] == session.suite
    assert env["descriptor_hash"] == session.descriptor_hash


def test_wire_layout_matches_contract():
    """Open with the contract's words alone: HPKE(KEM, HKDF-SHA256, AES-256-GCM), info = label 0x00 hash,
    plaintext = 4-byte length || CBOR || zeros, padded to a power of two from 1 KiB."""
    private = x25519.X25519PrivateKey.generate()
    descriptor = SessionDescriptor("x25519", private.public_key().public_bytes_raw(), MODEL, CONFIG)
    sealed = seal_request(descriptor, REQUEST, request_id=RID, timestamp=1_700_000_000_000)
    env = cbor2.loads(sealed.envelope.to_cbor())
    info = b"nitro-llm/v1 attested request\x00" + hashlib.sha256(descriptor.to_cbor()).digest()
    suite = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_256_GCM)
    padded = suite.decrypt(env["enc"] + env["ct"], private, info=info)
    assert len(padded) == 1024
    length = int.from_bytes(padded[:4], "big")
    assert padded[4 + length :] == bytes(len(padded) - 4 - length)
    inner = cbor2.loads(padded[4 : 4 + length])
    assert inner == {
        "request": REQUEST,
        "response_key": sealed.response_key,
        "request_id": RID,
        "timestamp": 1_700_000_000_000,
    }


def test_request_bound_to_descriptor_hash(session):
    """A request sealed to the same key but announced for another descriptor does not open."""
    sealed = seal_request(_client_view(session), REQUEST)
    other_digest = hashlib.sha256(b"another descriptor").digest()
    forged = AttestedEnvelope(sealed.envelope.suite, other_digest, sealed.envelope.enc, sealed.envelope.ct)
    with pytest.raises(UnknownDescriptorError):
        session.open_request(forged.to_cbor())


def test_same_key_other_descriptor_refused():
    """The enclave's key reused with another model digest: the hash, hence the HPKE info, differs."""
    first = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG)
    second = EnclaveSession(first._keypair, model_digest="1" * 64, config_digest=CONFIG)
    sealed = seal_request(_client_view(first), REQUEST)
    forged = AttestedEnvelope("x25519", second.descriptor_hash, sealed.envelope.enc, sealed.envelope.ct)
    with pytest.raises(HpkeOpenError):
        second.open_request(forged)


def test_request_sealed_to_another_enclave_refused(session):
    other = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite=session.suite)
    sealed = seal_request(_client_view(other), REQUEST)
    with pytest.raises(UnknownDescriptorError) as info:
        session.open_request(sealed.envelope.to_cbor())
    assert info.value.retryable


@pytest.mark.parametrize("field", ["v", "protocol", "suite", "descriptor_hash", "enc", "ct"])
def test_tamper_every_envelope_field(session, field):
    sealed = seal_request(_client_view(session), REQUEST)
    env = cbor2.loads(sealed.envelope.to_cbor())
    value = env[field]
    if isinstance(value, bytes):
        env[field] = value[:-1] + bytes([value[-1] ^ 1])
    elif field == "suite":
        env[field] = next(s for s in SUITES if s != value)
    elif field == "v":
        env[field] = 2
    else:
        env[field] = "kms"
    with pytest.raises((EnvelopeError, UnknownDescriptorError, DecryptionFailedError)):
        session.open_request(cbor2.dumps(env))


def test_flip_every_ciphertext_byte_region(session):
    sealed = seal_request(_client_view(session), REQUEST)
    ct = sealed.envelope.ct
    for index in (0, len(ct) // 2, len(ct) - 1):
        bad = ct[:index] + bytes([ct[index] ^ 0x80]) + ct[index + 1 :]
        env = AttestedEnvelope(
            sealed.envelope.suite, sealed.envelope.descriptor_hash, sealed.envelope.enc, bad
        )
        with pytest.raises(HpkeOpenError):
            session.open_request(env)


@pytest.mark.parametrize(
    "mutate",
    [
        lambda m: m.pop("ct"),
        lambda m: m.update(extra=1),
        lambda m: m.update(enc=b"\x00" * 5),
        lambda m: m.update(ct=b"\x00" * 16),
        lambda m: m.update(descriptor_hash=b"\x00" * 31),
        lambda m: m.update(suite=7),
        lambda m: m.update(v=True),
    ],
)
def test_envelope_schema_refused(session, mutate):
    env = cbor2.loads(seal_request(_client_view(session), REQUEST).envelope.to_cbor())
    mutate(env)
    with pytest.raises(AttestedEnvelopeError):
        AttestedEnvelope.from_cbor(cbor2.dumps(env))


def _seal_inner(session, inner):
    """Seal an arbitrary inner map the way a (buggy or hostile) client would."""
    from nitro_llm.protocol.hpke_suite import seal

    padded = pad(cbor2.dumps(inner), REQUEST_BUCKETS)
    enc, ct = seal(
        session.suite,
        session.descriptor.hpke_public_key,
        padded,
        info=attested._request_info(session.descriptor_hash),
    )
    return AttestedEnvelope(session.suite, session.descriptor_hash, enc, ct)


@pytest.mark.parametrize(
    "inner",
    [
        {"request": REQUEST, "response_key": b"k" * 32, "request_id": RID},
        {"request": REQUEST, "response_key": b"k" * 31, "request_id": RID, "timestamp": 1},
        {"request": REQUEST, "response_key": b"k" * 32, "request_id": "AB" * 16, "timestamp": 1},
        {"request": REQUEST, "response_key": b"k" * 32, "request_id": RID, "timestamp": -1},
        {"request": REQUEST, "response_key": b"k" * 32, "request_id": RID, "timestamp": True},
        {
            "request": {**REQUEST, "max_tokens": 0},
            "response_key": b"k" * 32,
            "request_id": RID,
            "timestamp": 1,
        },
        {"request": REQUEST, "response_key": b"k" * 32, "request_id": RID, "timestamp": 1, "x": 1},
        {
            "request": REQUEST,
            "response_key": b"k" * 32,
            "request_id": RID,
            "timestamp": 1,
            "conversation": b"c",
        },
        {
            "request": REQUEST,
            "response_key": b"k" * 32,
            "request_id": RID,
            "timestamp": 1,
            "conversation": "c" * 32,
        },
    ],
)
def test_inner_schema_refused_after_decryption(session, inner):
    with pytest.raises(RequestSchemaError):
        session.open_request(_seal_inner(session, inner))


def test_conversation_secret_travels_sealed_and_is_optional(session):
    conversation = new_conversation()
    sealed = seal_request(_client_view(session), REQUEST, conversation=conversation)
    assert conversation not in sealed.envelope.to_cbor()
    assert session.open_request(sealed.envelope.to_cbor()).conversation == conversation
    assert session.open_request(seal_request(_client_view(session), REQUEST).envelope).conversation is None
    with pytest.raises(ValueError):
        seal_request(_client_view(session), REQUEST, conversation=b"short")


def test_client_refuses_invalid_request_before_sealing(session):
    with pytest.raises(RequestSchemaError):
        seal_request(_client_view(session), {**REQUEST, "messages": []})


# --- padding ---------------------------------------------------------------------------------


def test_two_questions_in_one_bucket_have_identical_wire_sizes(session):
    short = {**REQUEST, "messages": [{"role": "user", "content": "hi"}]}
    longer = {**REQUEST, "messages": [{"role": "user", "content": "a much longer question " * 30}]}
    a = seal_request(_client_view(session), short).envelope.to_cbor()
    b = seal_request(_client_view(session), longer).envelope.to_cbor()
    assert len(a) == len(b)
    huge = {**REQUEST, "messages": [{"role": "user", "content": "x" * 5000}]}
    assert len(seal_request(_client_view(session), huge).envelope.to_cbor()) > len(a)


def test_padding_layout_and_strictness():
    assert unpad(pad(b"abc", CHUNK_BUCKETS)) == b"abc"
    assert len(pad(b"", CHUNK_BUCKETS)) == 256
    assert len(pad(b"x" * 252, CHUNK_BUCKETS)) == 256
    assert len(pad(b"x" * 253, CHUNK_BUCKETS)) == 1024
    assert len(pad(b"x" * 70000, CHUNK_BUCKETS)) == 2 * 65536
    from nitro_llm.protocol.attested_errors import PaddingError

    for bad in (b"\x00\x00", b"\x00\x00\x00\x09abc", b"\x00\x00\x00\x01a\x01"):
        with pytest.raises(PaddingError):
            unpad(bad)


# --- answer chunks ---------------------------------------------------------------------------


def _answer(key=b"k" * 32, rid=RID, texts=("Hel", "lo"), final_text=""):
    sealer = ResponseSealer(key, rid)
    frames = [sealer.seal(t) for t in texts]
    frames.append(sealer.seal(_final(final_text), final=True))
    return frames


def test_answer_round_trip_through_opened_request(session):
    sealed = seal_request(_client_view(session), REQUEST)
    opened = session.open_request(sealed.envelope.to_cbor())
    sealer = opened.response_sealer()
    frames = [sealer.seal("Hello"), sealer.seal(_final(" there"), final=True)]
    opener = sealed.response_opener()
    out = [opener.open(f) for f in frames]
    opener.finish()
    assert "".join(p["text"] for p in out) == "Hello there"
    assert out[-1]["finish_reason"] == "stop"


def test_chunk_wire_layout_matches_contract():
    frame = _answer(texts=("tok",))[0]
    assert set(frame) == {"t", "seq", "final", "ct"} and frame["seq"] == 0 and frame["final"] is False
    key = HKDF(hashes.SHA256(), 32, salt=bytes.fromhex(RID), info=b"nitro-llm/v1 attested response").derive(
        b"k" * 32
    )
    nonce = (0).to_bytes(8, "big") + bytes(3) + b"\x00"
    aad = cbor2.dumps({"protocol": "attested", "request_id": RID, "seq": 0, "final": False}, canonical=True)
    padded = AESGCM(key).decrypt(nonce, frame["ct"], aad)
    assert len(padded) == 256
    assert cbor2.loads(padded[4 : 4 + int.from_bytes(padded[:4], "big")]) == {"text": "tok"}


def test_stream_cut_short_detected():
    frames = _answer()
    opener = ResponseOpener(b"k" * 32, RID)
    for f in frames[:-1]:
        opener.open(f)
    with pytest.raises(ResponseTruncatedError):
        opener.finish()


def test_replayed_chunk_detected():
    frames = _answer()
    opener = ResponseOpener(b"k" * 32, RID)
    opener.open(frames[0])
    with pytest.raises(ChunkReplayError):
        opener.open(frames[0])


def test_swapped_chunks_detected():
    frames = _answer()
    opener = ResponseOpener(b"k" * 32, RID)
    with pytest.raises(ChunkGapError):
        opener.open(frames[1])


def test_swapped_chunks_with_renumbered_seq_fail_authentication():
    frames = _answer()
    opener = ResponseOpener(b"k" * 32, RID)
    with pytest.raises(DecryptionFailedError):
        opener.open({**frames[1], "seq": 0})


def test_chunk_after_final_detected():
    frames = _answer()
    opener = ResponseOpener(b"k" * 32, RID)
    for f in frames:
        opener.open(f)
    with pytest.raises(ChunkAfterFinalError):
        opener.open({**frames[0], "seq": len(frames)})


def test_early_final_flag_fails_authentication():
    """An attacker marks a middle chunk final to cut the answer short: the nonce and AAD refuse it."""
    frames = _answer()
    opener = ResponseOpener(b"k" * 32, RID)
    opener.open(frames[0])
    with pytest.raises(DecryptionFailedError):
        opener.open({**frames[1], "final": True})


def test_chunk_from_another_request_refused():
    frames = _answer(rid="cd" * 16)
    with pytest.raises(DecryptionFailedError):
        ResponseOpener(b"k" * 32, RID).open(frames[0])
    with pytest.raises(DecryptionFailedError):
        ResponseOpener(b"j" * 32, "cd" * 16).open(frames[0])


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "chunk", "seq": 0, "final": False},
        {"t": "chunk", "seq": -1, "final": False, "ct": b""},
        {"t": "chunk", "seq": True, "final": False, "ct": b""},
        {"t": "chunk", "seq": 0, "final": 0, "ct": b""},
        {"t": "chunk", "seq": 0, "final": False, "ct": "x"},
        {"t": "error", "seq": 0, "final": False, "ct": b""},
        {"t": "chunk", "seq": 0, "final": False, "ct": b"", "x": 1},
    ],
)
def test_chunk_frame_schema_refused(frame):
    with pytest.raises(FrameError):
        ResponseOpener(b"k" * 32, RID).open(frame)


def test_sealer_refuses_bad_payloads_and_keys():
    sealer = ResponseSealer(b"k" * 32, RID)
    with pytest.raises(ValueError):
        sealer.seal({"text": "x", "extra": 1})
    with pytest.raises(ValueError):
        sealer.seal({"text": "x"}, final=True)
    with pytest.raises(ValueError):
        sealer.seal({"text": "", "finish_reason": "stop", "usage": {"a": -1}}, final=True)
    sealer.seal(_final(), final=True)
    with pytest.raises(RuntimeError):
        sealer.seal("more")
    with pytest.raises(ResponseKeyError):
        ResponseSealer(b"short", RID)
    with pytest.raises(ResponseKeyError):
        ResponseOpener(b"k" * 32, "not hex")


def test_two_answers_of_different_length_in_one_bucket_have_identical_wire_sizes():
    """What the gateway sees: frame bytes. Same chunk count, different token and answer lengths."""
    from nitro_llm.protocol.frame_codec import encode_frame

    a = _answer(texts=("Yes", "."), final_text="")
    b = _answer(texts=(" Paracetamol", " is an analgesic with a long name"), final_text="and more")
    sizes_a = [len(encode_frame(f)) for f in a]
    sizes_b = [len(encode_frame(f)) for f in b]
    assert sizes_a == sizes_b
    assert len(set(sizes_a)) == 1  # the final chunk, with its usage map, is the same size as the others
    whole_a = _answer(texts=("short answer",))
    whole_b = _answer(texts=("a considerably longer answer, still inside one bucket " * 2,))
    assert [len(encode_frame(f)) for f in whole_a] == [len(encode_frame(f)) for f in whole_b]


def test_answer_never_carries_plaintext():
    frames = _answer(texts=("the diagnosis is CANARY-7731",))
    assert all(b"CANARY" not in f["ct"] for f in frames)
