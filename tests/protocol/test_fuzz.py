"""Hostile bytes into every parser: only typed errors come out, never a crash or another exception."""

import socket
import struct

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nitro_llm.protocol.errors import EnvelopeError, FrameError, RequestSchemaError
from nitro_llm.protocol.frame_codec import FrameDecoder, decode_frame, encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope, KmsHeader, seal_request
from nitro_llm.protocol.messages import ChatRequest

FUZZ = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

cbor_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False)
    | st.text(max_size=20)
    | st.binary(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=20,
)

KEY = bytes(32)
VALID = seal_request(
    KEY,
    KmsHeader.new(model="m", conversation_id="00" * 16, key_id="k"),
    {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0.5},
    edk=b"edk",
).to_cbor()


@FUZZ
@given(st.binary(max_size=300))
def test_decode_frame_random_bytes(data):
    try:
        frame = decode_frame(data)
    except FrameError:
        return
    assert isinstance(frame, dict) and isinstance(frame["t"], str)


@FUZZ
@given(cbor_values)
def test_decode_frame_random_cbor(value):
    try:
        decode_frame(cbor2.dumps(value))
    except FrameError:
        pass


@FUZZ
@given(st.binary(max_size=200), st.integers(min_value=1, max_value=7))
def test_decoder_and_socket_reader_random_stream(data, split):
    decoder = FrameDecoder(max_size=1000)
    try:
        for i in range(0, len(data), split):
            decoder.feed(data[i : i + split])
        decoder.close()
    except FrameError:
        pass
    a, b = socket.socketpair()
    with a, b:
        a.sendall(data)
        a.shutdown(socket.SHUT_WR)
        try:
            for _ in range(len(data) + 1):  # each frame consumes at least 5 bytes: bounded
                if read_frame(b, max_size=1000) is None:
                    break
        except FrameError:
            pass


@FUZZ
@given(st.dictionaries(st.text(max_size=10), cbor_values, max_size=6).map(lambda d: {"t": "x", **d}))
def test_encode_decode_round_trip(frame):
    try:
        wire = encode_frame(frame)
    except FrameError:
        return
    (length,) = struct.unpack(">I", wire[:4])
    assert length == len(wire) - 4
    assert FrameDecoder().feed(wire) == [frame]


@FUZZ
@given(st.binary(max_size=400))
def test_envelope_random_bytes(data):
    try:
        KmsEnvelope.from_cbor(data)
    except EnvelopeError:
        pass


@FUZZ
@given(st.integers(min_value=0, max_value=len(VALID) - 1), st.integers(min_value=1, max_value=255))
def test_envelope_single_byte_mutation(pos, xor):
    mutated = bytearray(VALID)
    mutated[pos] ^= xor
    try:
        KmsEnvelope.from_cbor(bytes(mutated))
    except EnvelopeError:
        pass


@FUZZ
@given(cbor_values)
def test_request_schema_random_values(value):
    try:
        ChatRequest.from_dict(value)
    except RequestSchemaError:
        pass
