import asyncio
import socket
import struct

import cbor2
import pytest

from nitro_llm.protocol.errors import FrameError, FrameTooLargeError, FrameTruncatedError
from nitro_llm.protocol.frame_codec import (
    FrameDecoder,
    decode_frame,
    encode_frame,
    read_frame,
    read_frame_async,
)


def _raw(body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + body


def test_round_trip_over_socketpair():
    a, b = socket.socketpair()
    with a, b:
        frames = [{"t": "ping"}, {"t": "infer", "envelope": b"x" * 100_000}, {"t": "ok"}]
        for f in frames:
            a.sendall(encode_frame(f))
        a.shutdown(socket.SHUT_WR)
        assert [read_frame(b) for _ in frames] == frames
        assert read_frame(b) is None  # clean close between frames


def test_large_frame_is_not_cut_at_4k():
    big = {"t": "infer", "envelope": bytes(range(256)) * 80}  # 20 KB
    a, b = socket.socketpair()
    with a, b:
        a.sendall(encode_frame(big))
        assert read_frame(b) == big


def test_encode_refuses_oversize_and_untyped():
    with pytest.raises(FrameTooLargeError):
        encode_frame({"t": "infer", "envelope": b"x" * 2000}, max_size=1000)
    with pytest.raises(FrameError):
        encode_frame({"envelope": b"x"})


@pytest.mark.parametrize(
    ("wire", "error"),
    [
        (struct.pack(">I", 10_000) + b"\xa0", FrameTooLargeError),  # announced size over max: body never read
        (b"\x00\x00", FrameTruncatedError),  # cut inside the length
        (struct.pack(">I", 50) + b"\xa1", FrameTruncatedError),  # cut inside the body
        (struct.pack(">I", 0), FrameError),
        (_raw(cbor2.dumps([1, 2])), FrameError),  # not a map
        (_raw(cbor2.dumps({"x": 1})), FrameError),  # no type
        (_raw(cbor2.dumps({"t": 5})), FrameError),  # type not text
        (_raw(b"\xff\xff\xff"), FrameError),  # not CBOR
        (_raw(cbor2.dumps({"t": "ping"}) + b"\x00"), FrameError),  # trailing bytes
        (_raw(b"\xa2\x61t\x61a\x61t\x61b"), FrameError),  # duplicate key
        (_raw(cbor2.dumps({"t": "ping", 1: 2})), FrameError),  # non-text key
        (_raw(cbor2.dumps({"t": "ping", "d": cbor2.CBORTag(1, 0)})), FrameError),  # datetime tag
    ],
)
def test_bad_wire_is_a_typed_error(wire, error):
    a, b = socket.socketpair()
    with a, b:
        a.sendall(wire)
        a.shutdown(socket.SHUT_WR)
        with pytest.raises(error):
            read_frame(b, max_size=1000)
    with pytest.raises(error):
        decoder = FrameDecoder(max_size=1000)
        decoder.feed(wire)
        decoder.close()
    with pytest.raises(error):
        asyncio.run(_read_async(wire, 1000))


async def _read_async(wire: bytes, max_size: int):
    reader = asyncio.StreamReader()
    reader.feed_data(wire)
    reader.feed_eof()
    return await read_frame_async(reader, max_size=max_size)


def test_async_reader_round_trip_and_clean_eof():
    frame = {"t": "chunk", "seq": 3, "final": True, "ct": b"\x00" * 40}
    assert asyncio.run(_read_async(encode_frame(frame), 1 << 20)) == frame
    assert asyncio.run(_read_async(b"", 1 << 20)) is None


def test_timeout_mid_frame_is_truncation():
    a, b = socket.socketpair()
    with a, b:
        a.sendall(encode_frame({"t": "ping"})[:3])
        b.settimeout(0.2)
        with pytest.raises(FrameTruncatedError):
            read_frame(b)


def test_decoder_reassembles_byte_by_byte():
    frames = [{"t": "chunk", "seq": i, "final": i == 4, "ct": bytes([i]) * (i * 37 + 16)} for i in range(5)]
    wire = b"".join(encode_frame(f) for f in frames)
    decoder = FrameDecoder()
    got = []
    for i in range(len(wire)):
        got += decoder.feed(wire[i : i + 1])
    decoder.close()
    assert got == frames


def test_decode_frame_accepts_plain_map():
    assert decode_frame(cbor2.dumps({"t": "pong", "n": [1, 2.5, None, True]})) == {
        "t": "pong",
        "n": [1, 2.5, None, True],
    }
