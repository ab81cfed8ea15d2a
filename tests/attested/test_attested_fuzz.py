"""Hostile bytes into every attested-protocol parser: only typed errors come out, never a crash."""

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nitro_llm.errors import ProtocolError
from nitro_llm.protocol.attested import (
    AttestedEnvelope,
    EnclaveSession,
    ResponseOpener,
    ResponseSealer,
    SessionDescriptor,
    decode_attestation_bundle,
    seal_request,
)
from nitro_llm.protocol.padding import unpad

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
RID = "ab" * 16
SESSION = EnclaveSession.generate(model_digest="0" * 64, config_digest="1" * 64)
VALID = seal_request(
    SessionDescriptor.from_cbor(SESSION.descriptor_bytes),
    {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0.5},
).envelope.to_cbor()

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=40),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=16), inner, max_size=6),
    max_leaves=20,
)


def _only_protocol_errors(fn, data):
    try:
        fn(data)
    except ProtocolError:
        pass


@FUZZ
@given(st.binary(max_size=400))
def test_envelope_and_open_random_bytes(data):
    _only_protocol_errors(SESSION.open_request, data)


@FUZZ
@given(cbor_values)
def test_envelope_random_cbor(value):
    _only_protocol_errors(AttestedEnvelope.from_cbor, cbor2.dumps(value))


@FUZZ
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=1, max_value=255))
def test_envelope_single_byte_corruption(index, flip):
    corrupted = VALID[:index] + bytes([VALID[index] ^ flip]) + VALID[index + 1 :]
    _only_protocol_errors(SESSION.open_request, corrupted)


@FUZZ
@given(st.binary(max_size=400) | cbor_values.map(cbor2.dumps))
def test_descriptor_and_bundle_random_input(data):
    _only_protocol_errors(SessionDescriptor.from_cbor, data)
    _only_protocol_errors(decode_attestation_bundle, data)


@FUZZ
@given(st.dictionaries(st.sampled_from(["t", "seq", "final", "ct", "x"]), cbor_values, max_size=5))
def test_chunk_opener_random_frames(frame):
    _only_protocol_errors(ResponseOpener(b"k" * 32, RID).open, frame)


@FUZZ
@given(st.binary(max_size=300))
def test_unpad_random_bytes(data):
    _only_protocol_errors(unpad, data)


@FUZZ
@given(st.lists(st.text(max_size=60), min_size=1, max_size=6))
def test_any_text_round_trips_through_chunks(texts):
    sealer = ResponseSealer(b"k" * 32, RID)
    opener = ResponseOpener(b"k" * 32, RID)
    frames = [sealer.seal(t) for t in texts]
    frames.append(sealer.seal({"text": "", "finish_reason": "stop", "usage": {}}, final=True))
    out = [opener.open(f)["text"] for f in frames]
    opener.finish()
    assert "".join(out) == "".join(texts)
