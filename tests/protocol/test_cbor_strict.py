"""The one strict CBOR decoder: hostile structure is refused, with the caller's typed error, before
cbor2 builds a single object (a spy on cbor2's decoder proves it is never constructed)."""

from __future__ import annotations

import datetime as dt
import re
import struct

import cbor2
import pytest

from nitro_llm import cbor_strict
from nitro_llm.attestation.cose import ES384_PROTECTED
from nitro_llm.attestation.document import parse_document
from nitro_llm.attestation.errors import NsmError, SchemaError
from nitro_llm.attestation.nsm import messages
from nitro_llm.protocol import cbor
from nitro_llm.protocol.errors import EnvelopeError, FrameError
from nitro_llm.protocol.frame_codec import FrameDecoder, decode_frame, encode_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope

PING = cbor2.dumps({"t": "ping"})
DEEP = {"t": "x", "d": [[[[[[[[1]]]]]]]]}  # the map, then 8 arrays: 9 levels, one above MAX_DEPTH


def _frame_with(value_bytes: bytes) -> bytes:
    """``{"t": "ping", "d": <value_bytes>}``, the value spliced in raw."""
    return b"\xa2" + cbor2.dumps("t") + cbor2.dumps("ping") + cbor2.dumps("d") + value_bytes


TAG_1_DATETIME = _frame_with(b"\xc1\x1a\x65\x00\x00\x00")  # 1(1694498816)
TAG_35_REGEX = _frame_with(b"\xd8\x23" + cbor2.dumps("(a+)+$"))  # 35("(a+)+$")
INDEFINITE_MAP = b"\xbf" + cbor2.dumps("t") + cbor2.dumps("ping") + b"\xff"
INDEFINITE_STRING = _frame_with(b"\x7f\x61a\xff")
HUGE_STRING = _frame_with(b"\x5b" + struct.pack(">Q", 2**63) + b"xy")  # announces 2^63 bytes
HUGE_ARRAY = _frame_with(b"\x9b" + struct.pack(">Q", 2**40) + b"\x00")  # announces 2^40 items
HUGE_MAP = b"\xba\xff\xff\xff\xff" + cbor2.dumps("t") + cbor2.dumps("ping")

HOSTILE_FRAMES = {
    "tag 1 datetime": (TAG_1_DATETIME, "tag 1"),
    "tag 35 regex": (TAG_35_REGEX, "tag 35"),
    "indefinite map": (INDEFINITE_MAP, "indefinite"),
    "indefinite string": (INDEFINITE_STRING, "indefinite"),
    "nesting above the limit": (cbor2.dumps(DEEP), "nesting deeper than 8"),
    "string length above the input": (HUGE_STRING, "announces 9223372036854775808 bytes"),
    "array count above the input": (HUGE_ARRAY, "announces 1099511627776 entries"),
    "map count above the input": (HUGE_MAP, "announces 4294967295 entries"),
    "undefined": (_frame_with(b"\xf7"), "undefined"),
    "simple value": (_frame_with(b"\xf8\x20"), "simple"),
    "break outside an indefinite item": (_frame_with(b"\xff"), "break"),
    "reserved header": (_frame_with(b"\x1c"), "reserved"),
    "integer map key": (cbor2.dumps({"t": "ping", 1: 2}), "map key must be text"),
    "nested integer map key": (cbor2.dumps({"t": "ping", "d": {1: 2}}), "map key must be text"),
    "array as map key": (b"\xa1\x80\x00", "map key"),
    "trailing bytes": (PING + b"\x00", "trailing"),
    "cut inside a string": (PING[:-1], "announces 4 bytes, only 3 remain"),
    "cut inside an array": (_frame_with(b"\x82\x81\x01"), "ends inside an item"),
    "cut inside a header": (_frame_with(b"\x1b\x00\x00"), "ends inside"),
}


class BuilderCalled(AssertionError):
    pass


@pytest.fixture
def builder_spy(monkeypatch):
    """Replace cbor2's decoder (the only object builder the strict decoder uses) with a counting spy."""
    real = cbor2.CBORDecoder
    calls: list[bytes] = []

    def spy(fp, **kwargs):
        calls.append(fp.getvalue())
        return real(fp, **kwargs)

    monkeypatch.setattr(cbor2, "CBORDecoder", spy)
    return calls


def test_the_hostile_inputs_are_what_they_claim_for_plain_cbor2():
    """Without the pre-scan, cbor2 builds a datetime and a compiled regex from these bytes."""
    assert isinstance(cbor2.loads(TAG_1_DATETIME)["d"], dt.datetime)
    assert isinstance(cbor2.loads(TAG_35_REGEX)["d"], re.Pattern)
    assert cbor2.loads(INDEFINITE_MAP) == {"t": "ping"}


@pytest.mark.parametrize(("wire", "reason"), HOSTILE_FRAMES.values(), ids=HOSTILE_FRAMES.keys())
def test_hostile_frames_are_refused_before_any_object_is_built(builder_spy, wire, reason):
    with pytest.raises(FrameError, match=reason) as info:
        decode_frame(wire)
    assert "strict CBOR decoder" in info.value.message and info.value.code == FrameError.code
    with pytest.raises(FrameError, match=reason):
        FrameDecoder().feed(struct.pack(">I", len(wire)) + wire)
    assert builder_spy == []  # refused on the bytes' structure alone


def test_the_spy_sees_what_passes_the_scan(builder_spy):
    """The spy is live: an accepted frame, and a duplicate key (only cbor2 can see it), reach the builder."""
    assert decode_frame(PING) == {"t": "ping"}
    with pytest.raises(FrameError, match="not valid CBOR"):
        decode_frame(b"\xa2\x61t\x61a\x61t\x61b")
    assert builder_spy == [PING, b"\xa2\x61t\x61a\x61t\x61b"]


def test_a_tag_that_would_raise_in_construction_is_never_constructed(monkeypatch):
    """cbor2's datetime decoder replaced by one that raises a distinctive error: it is never reached."""

    class Constructed(Exception):
        pass

    def explode(_fp, **_kwargs):
        raise Constructed

    monkeypatch.setattr(cbor2, "CBORDecoder", explode)
    with pytest.raises(FrameError, match="tag 1"):
        decode_frame(TAG_1_DATETIME)
    with pytest.raises(FrameError, match="Constructed"):  # it does fire for bytes that pass the scan
        decode_frame(PING)


def test_depth_limit_is_exact():
    ok = {"t": "x", "d": [[[[[[[1]]]]]]]}  # the map and 7 arrays: 8 levels
    assert decode_frame(cbor2.dumps(ok)) == ok
    with pytest.raises(FrameError, match="nesting deeper than 8"):
        decode_frame(cbor2.dumps(DEEP))
    with pytest.raises(FrameError, match="nesting deeper than 8"):  # empty containers count too
        decode_frame(cbor2.dumps({"t": "x", "d": [[[[[[[[]]]]]]]]}))


def test_size_and_item_limits():
    with pytest.raises(FrameError, match="above the 10-byte limit"):
        cbor.decode_map(cbor2.dumps({"t": "x" * 20}), what="frame", error=FrameError, max_size=10)
    many = cbor2.dumps({"t": "x", "d": [0] * cbor.MAX_ITEMS})
    with pytest.raises(FrameError, match=f"more than {cbor.MAX_ITEMS} items"):
        decode_frame(many)
    with pytest.raises(FrameError, match="empty"):
        decode_frame(b"")


def test_plain_values_still_decode():
    frame = {"t": "pong", "n": [1, -2, 2**64 - 1, -(2**64), 2.5, None, True, False], "b": b"\x00", "m": {}}
    assert decode_frame(cbor2.dumps(frame)) == frame
    half = _frame_with(b"\xf9\x3c\x00")  # 1.0 as a half float
    assert decode_frame(half)["d"] == 1.0


def test_the_sender_refuses_what_the_reader_refuses():
    for value in (dt.datetime(2024, 1, 1, tzinfo=dt.UTC), 2**64, -(2**64) - 1, {1: 2}):
        with pytest.raises(FrameError, match="strict CBOR decoder"):
            encode_frame({"t": "x", "d": value})


def test_sealed_payload_parsers_use_the_strict_decoder(builder_spy):
    with pytest.raises(EnvelopeError, match="tag 1"):
        KmsEnvelope.from_cbor(cbor2.dumps({"header": cbor2.CBORTag(1, 0)}))
    assert builder_spy == []


def test_attestation_allows_only_an_outermost_cose_tag(builder_spy):
    def parse(data: bytes) -> object:
        return cbor_strict.decode(
            data, what="document", error=SchemaError, max_size=1000, max_depth=4, outer_tag=18
        )

    assert parse(cbor2.dumps(cbor2.CBORTag(18, [b"", {}, b"", b""]))).tag == 18  # type: ignore[attr-defined]
    assert parse(cbor2.dumps({1: -35})) == {1: -35}  # COSE headers have integer keys
    for data in (
        cbor2.dumps([cbor2.CBORTag(18, [])]),  # tag 18 inside
        cbor2.dumps(cbor2.CBORTag(55799, [])),  # self-described CBOR
        cbor2.dumps(cbor2.CBORTag(1, 0)),
        b"\x9f\xff",
    ):
        builder_spy.clear()
        with pytest.raises(SchemaError, match="strict CBOR decoder"):
            parse(data)
        assert builder_spy == []
    payload = cbor2.dumps({"module_id": cbor2.CBORTag(1, 0)})
    document = cbor2.dumps([ES384_PROTECTED, {}, payload, b"\x00" * 96])
    with pytest.raises(SchemaError, match=r"document payload is refused.*tag 1"):
        parse_document(document)
    assert builder_spy == [document]  # the outer COSE_Sign1 was built, its payload never


def test_nsm_responses_use_the_strict_decoder(builder_spy):
    response = cbor2.dumps({"Attestation": {"document": cbor2.CBORTag(1, 0)}})
    with pytest.raises(NsmError, match=r"not CBOR we accept.*tag 1"):
        messages.parse_attestation_response(response)
    assert builder_spy == []
    assert messages.parse_get_random_response(cbor2.dumps({"GetRandom": {"random": b"r"}})) == b"r"
