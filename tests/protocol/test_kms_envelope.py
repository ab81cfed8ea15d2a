import dataclasses
import os

import cbor2
import pytest
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from nitro_llm.protocol.errors import (
    ChunkAfterFinalError,
    ChunkGapError,
    ChunkReplayError,
    DataKeyError,
    DecryptionFailedError,
    EnvelopeError,
    FrameError,
    RequestSchemaError,
    ResponseTruncatedError,
)
from nitro_llm.protocol.kms_envelope import (
    KmsEnvelope,
    KmsHeader,
    ResponseOpener,
    ResponseSealer,
    new_id,
    open_request,
    seal_request,
)
from nitro_llm.protocol.messages import ChatRequest
from nitro_llm.protocol.padding import CHUNK_BUCKETS, REQUEST_BUCKETS, pad


def _unpad(padded: bytes) -> bytes:
    """The contract's padding in its own words: 4-byte BE length, payload, zero bytes."""
    length = int.from_bytes(padded[:4], "big")
    assert padded[4 + length :] == bytes(len(padded) - 4 - length)
    return padded[4 : 4 + length]


KEY = bytes(range(32))
EDK = b"\x01\x02" * 100
REQUEST = {"messages": [{"role": "user", "content": "my MRN is 12345"}], "max_tokens": 8, "temperature": 0.0}


def _header(**over):
    fields = {
        "request_id": "ab" * 16,
        "timestamp": 1_700_000_000_000,
        "model": "smollm2-135m",
        "mode": "chat",
        "conversation_id": "cd" * 16,
        "key_id": "alias/nitro-llm",
    }
    fields.update(over)
    return KmsHeader(**fields)


def test_request_round_trip_through_cbor():
    env = seal_request(KEY, _header(), REQUEST, edk=EDK)
    parsed = KmsEnvelope.from_cbor(env.to_cbor())
    assert parsed == env
    assert open_request(KEY, parsed) == REQUEST
    assert ChatRequest.from_dict(open_request(KEY, parsed)).max_tokens == 8


def test_wire_layout_matches_contract():
    """Decrypt with the contract's words alone, not our helpers: AES-GCM, aad = canonical CBOR(header),
    plaintext padded to a bucket (v2)."""
    header = _header()
    raw = cbor2.loads(seal_request(KEY, header, REQUEST, edk=EDK).to_cbor())
    assert set(raw) == {"v", "protocol", "header", "edk", "nonce", "ct"}
    assert raw["v"] == 2 and raw["protocol"] == "kms" and raw["edk"] == EDK and len(raw["nonce"]) == 12
    aad = cbor2.dumps(raw["header"], canonical=True)
    padded = AESGCM(KEY).decrypt(raw["nonce"], raw["ct"], aad)
    assert len(padded) == 1024
    assert cbor2.loads(_unpad(padded)) == REQUEST

    frame = ResponseSealer(KEY, header).seal(
        {"text": "fin", "finish_reason": "stop", "usage": {"n": 1}}, final=True
    )
    chunk_key = HKDF(
        hashes.SHA256(), 32, bytes.fromhex(header.request_id), b"nitro-llm/v1 kms response"
    ).derive(KEY)
    nonce = (0).to_bytes(8, "big") + b"\x00\x00\x00\x01"
    padded = AESGCM(chunk_key).decrypt(nonce, frame["ct"], aad)
    assert len(padded) == 256
    assert cbor2.loads(_unpad(padded))["text"] == "fin"


def test_header_field_order_does_not_change_aad():
    header = _header()
    reordered = dict(reversed(list(header.to_map().items())))
    assert KmsHeader.from_map(reordered).aad() == header.aad()


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("request_id", "ac" * 16),
        ("timestamp", 1_700_000_000_001),
        ("model", "other-model"),
        ("conversation_id", "ce" * 16),
        ("key_id", "alias/other"),
    ],
)
def test_tampered_header_field_fails_authentication(field, value):
    env = seal_request(KEY, _header(), REQUEST, edk=EDK)
    tampered = dataclasses.replace(env, header=dataclasses.replace(env.header, **{field: value}))
    with pytest.raises(DecryptionFailedError):
        open_request(KEY, tampered)


def test_tampered_nonce_ct_and_wrong_key_fail():
    env = seal_request(KEY, _header(), REQUEST, edk=EDK)
    flipped_nonce = bytes([env.nonce[0] ^ 1]) + env.nonce[1:]
    for tampered in (
        dataclasses.replace(env, nonce=flipped_nonce),
        dataclasses.replace(env, ct=env.ct[:-1] + bytes([env.ct[-1] ^ 1])),
        dataclasses.replace(env, ct=bytes([env.ct[0] ^ 0x80]) + env.ct[1:]),
    ):
        with pytest.raises(DecryptionFailedError):
            open_request(KEY, tampered)
    with pytest.raises(DecryptionFailedError):
        open_request(os.urandom(32), env)


def test_every_bit_of_the_serialized_ciphertext_region_is_authenticated():
    env = seal_request(KEY, _header(), REQUEST, edk=EDK)
    for i in range(len(env.ct)):
        bad = bytearray(env.ct)
        bad[i] ^= 0x01
        with pytest.raises(DecryptionFailedError):
            open_request(KEY, dataclasses.replace(env, ct=bytes(bad)))


def test_data_key_size_checked():
    with pytest.raises(DataKeyError):
        seal_request(b"short", _header(), REQUEST, edk=EDK)
    with pytest.raises(DataKeyError):
        ResponseSealer(b"x" * 16, _header())


def test_seal_validates_request_schema():
    with pytest.raises(RequestSchemaError):
        seal_request(KEY, _header(), {**REQUEST, "max_tokens": 0}, edk=EDK)


def test_open_request_refuses_non_map_plaintext():
    header = _header()
    nonce = os.urandom(12)
    plaintext = pad(cbor2.dumps([1, 2]), REQUEST_BUCKETS)
    env = KmsEnvelope(header, EDK, nonce, AESGCM(KEY).encrypt(nonce, plaintext, header.aad()))
    with pytest.raises(RequestSchemaError):
        open_request(KEY, env)


def _env_map(**over):
    raw = seal_request(KEY, _header(), REQUEST, edk=EDK).to_map()
    raw.update(over)
    return raw


@pytest.mark.parametrize(
    "raw",
    [
        _env_map(v=1),
        _env_map(v=3),
        _env_map(v=True),
        _env_map(protocol="attested"),
        _env_map(edk=b""),
        _env_map(edk="text"),
        _env_map(edk=b"x" * 6145),
        _env_map(nonce=b"x" * 11),
        _env_map(ct=b"x" * 15),
        _env_map(extra=1),
        {k: v for k, v in _env_map().items() if k != "nonce"},
        _env_map(header=[1]),
        _env_map(header={**_header().to_map(), "extra": 1}),
        _env_map(header={**_header().to_map(), "request_id": "AB" * 16}),
        _env_map(header={**_header().to_map(), "request_id": "ab" * 15}),
        _env_map(header={**_header().to_map(), "conversation_id": "zz" * 16}),
        _env_map(header={**_header().to_map(), "timestamp": "now"}),
        _env_map(header={**_header().to_map(), "timestamp": -1}),
        _env_map(header={**_header().to_map(), "timestamp": True}),
        _env_map(header={**_header().to_map(), "model": ""}),
        _env_map(header={**_header().to_map(), "model": "m\n"}),
        _env_map(header={**_header().to_map(), "mode": "completion"}),
        _env_map(header={**_header().to_map(), "key_id": 5}),
    ],
)
def test_envelope_schema_is_strict(raw):
    with pytest.raises(EnvelopeError):
        KmsEnvelope.from_cbor(cbor2.dumps(raw))


def test_envelope_not_cbor_or_not_map():
    for data in (b"", b"\xff", cbor2.dumps([1]), cbor2.dumps(_env_map()) + b"\x00"):
        with pytest.raises(EnvelopeError):
            KmsEnvelope.from_cbor(data)


def test_new_header_ids_are_fresh():
    a = KmsHeader.new(model="m", conversation_id=new_id(), key_id="k")
    b = KmsHeader.new(model="m", conversation_id=a.conversation_id, key_id="k")
    assert a.request_id != b.request_id
    assert a.encryption_context() == {"nitro-llm:conversation": a.conversation_id}


# ---- answer chunks ----


def _answer(header, n=3):
    sealer = ResponseSealer(KEY, header)
    frames = [sealer.seal(f"tok{i} ") for i in range(n)]
    frames.append(
        sealer.seal({"text": "", "finish_reason": "stop", "usage": {"completion_tokens": n}}, final=True)
    )
    return frames


def test_answer_round_trip():
    header = _header()
    opener = ResponseOpener(KEY, header)
    texts = [opener.open(f)["text"] for f in _answer(header)]
    opener.finish()
    assert "".join(texts) == "tok0 tok1 tok2 "
    assert opener.finished


def test_reorder_replay_gap_after_final_and_truncation():
    header = _header()
    frames = _answer(header)

    opener = ResponseOpener(KEY, header)
    with pytest.raises(ChunkGapError):
        opener.open(frames[1])

    opener = ResponseOpener(KEY, header)
    opener.open(frames[0])
    with pytest.raises(ChunkReplayError):
        opener.open(frames[0])

    opener = ResponseOpener(KEY, header)
    for f in frames:
        opener.open(f)
    with pytest.raises(ChunkAfterFinalError):
        opener.open(frames[-1])

    opener = ResponseOpener(KEY, header)
    for f in frames[:-1]:
        opener.open(f)
    with pytest.raises(ResponseTruncatedError):
        opener.finish()


def test_relabelled_chunks_fail_authentication():
    header = _header()
    frames = _answer(header)
    cases = [
        {**frames[0], "final": True},  # cut the answer short by flagging an early chunk final
        {**frames[1], "seq": 0},  # chunk 1 presented as chunk 0 (reorder)
        {**frames[0], "ct": frames[0]["ct"][:-1] + bytes([frames[0]["ct"][-1] ^ 1])},
    ]
    for frame in cases:
        with pytest.raises(DecryptionFailedError):
            ResponseOpener(KEY, header).open(frame)


def test_chunks_bound_to_their_request_and_header():
    header = _header()
    frames = _answer(header)
    with pytest.raises(DecryptionFailedError):  # other request id -> other chunk key
        ResponseOpener(KEY, _header(request_id="ef" * 16)).open(frames[0])
    with pytest.raises(DecryptionFailedError):  # same request id, other header field -> other AAD
        ResponseOpener(KEY, _header(model="other")).open(frames[0])
    with pytest.raises(DecryptionFailedError):
        ResponseOpener(os.urandom(32), header).open(frames[0])


@pytest.mark.parametrize(
    "frame",
    [
        {"t": "error", "seq": 0, "final": False, "ct": b"x" * 16},
        {"t": "chunk", "seq": -1, "final": False, "ct": b"x" * 16},
        {"t": "chunk", "seq": True, "final": False, "ct": b"x" * 16},
        {"t": "chunk", "seq": 0, "final": 1, "ct": b"x" * 16},
        {"t": "chunk", "seq": 0, "final": False, "ct": "x"},
        {"t": "chunk", "seq": 0, "final": False},
        {"t": "chunk", "seq": 0, "final": False, "ct": b"x", "extra": 1},
    ],
)
def test_malformed_chunk_frames(frame):
    with pytest.raises(FrameError):
        ResponseOpener(KEY, _header()).open(frame)


def test_sealer_rules():
    sealer = ResponseSealer(KEY, _header())
    with pytest.raises(ValueError):
        sealer.seal({"text": "x"}, final=True)  # final needs finish_reason and usage
    with pytest.raises(ValueError):
        sealer.seal({"no_text": 1})
    sealer.seal({"text": "", "finish_reason": "stop", "usage": {}}, final=True)
    with pytest.raises(RuntimeError):
        sealer.seal("more")


def test_opener_refuses_final_payload_without_usage():
    """A key holder (not the enclave) could seal a final chunk missing fields: the client still checks."""
    header = _header()
    chunk_key = HKDF(
        hashes.SHA256(), 32, bytes.fromhex(header.request_id), b"nitro-llm/v1 kms response"
    ).derive(KEY)
    nonce = (0).to_bytes(8, "big") + b"\x00\x00\x00\x01"
    ct = AESGCM(chunk_key).encrypt(nonce, pad(cbor2.dumps({"text": "x"}), CHUNK_BUCKETS), header.aad())
    with pytest.raises(FrameError):
        ResponseOpener(KEY, header).open({"t": "chunk", "seq": 0, "final": True, "ct": ct})
