"""Length-prefixed CBOR frames: the only way bytes move between gateway and enclave.

A 4-byte big-endian length, then one CBOR map with a text ``t``. The length is checked against a
maximum *before* any body byte is read, so a hostile length cannot make the reader allocate; a peer
that stops mid-frame is reported as truncated, never as a shorter valid frame. The seed read fixed
4 KB chunks and cut long prompts; nothing here assumes a size below the configured maximum.
"""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Mapping
from typing import Any

from nitro_llm.protocol import cbor
from nitro_llm.protocol.errors import FrameError, FrameTooLargeError, FrameTruncatedError

DEFAULT_MAX_FRAME_SIZE = 16 * 1024 * 1024
_LENGTH = struct.Struct(">I")
HEADER_SIZE = _LENGTH.size


def encode_frame(frame: Mapping[str, Any], *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> bytes:
    """Refuse to produce what the peer would refuse to read: fail at the sender, with the size."""
    if not isinstance(frame.get("t"), str):
        raise FrameError("a frame needs a text 't' field naming its type")
    body = cbor.dumps(dict(frame))
    if len(body) > max_size:
        raise FrameTooLargeError(f"frame of {len(body)} bytes exceeds the maximum of {max_size}")
    cbor.check_sendable(body, what="frame", error=FrameError)
    return _LENGTH.pack(len(body)) + body


def decode_frame(body: bytes) -> dict[str, Any]:
    """Decode one frame body (the bytes after the length prefix)."""
    frame = cbor.decode_map(body, what="frame", error=FrameError)
    if not isinstance(frame.get("t"), str):
        raise FrameError("frame has no text 't' field naming its type")
    return frame


def _body_length(header: bytes, max_size: int) -> int:
    (length,) = _LENGTH.unpack(header)
    if length > max_size:
        raise FrameTooLargeError(f"peer announced a frame of {length} bytes; the maximum is {max_size}")
    if length == 0:
        raise FrameError("frame has length 0")
    return length


def _recv_exactly(sock: socket.socket, n: int) -> bytes:
    """Fewer than ``n`` bytes means the peer closed; the caller decides if that is clean."""
    view = bytearray(n)
    got = 0
    while got < n:
        try:
            chunk = sock.recv_into(memoryview(view)[got:], n - got)
        except TimeoutError:
            raise FrameTruncatedError(f"timed out after {got} of {n} bytes") from None
        if chunk == 0:
            break
        got += chunk
    return bytes(view[:got])


def read_frame(sock: socket.socket, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> dict[str, Any] | None:
    """Read one frame from a blocking socket; ``None`` if the peer closed cleanly between frames."""
    header = _recv_exactly(sock, HEADER_SIZE)
    if not header:
        return None
    if len(header) < HEADER_SIZE:
        raise FrameTruncatedError(f"peer closed after {len(header)} of {HEADER_SIZE} length bytes")
    length = _body_length(header, max_size)
    body = _recv_exactly(sock, length)
    if len(body) < length:
        raise FrameTruncatedError(f"peer closed after {len(body)} of {length} frame bytes")
    return decode_frame(body)


async def read_frame_async(
    reader: asyncio.StreamReader, *, max_size: int = DEFAULT_MAX_FRAME_SIZE
) -> dict[str, Any] | None:
    """The asyncio twin of :func:`read_frame`, for the gateway's event loop."""
    try:
        header = await reader.readexactly(HEADER_SIZE)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial:
            return None
        got = len(exc.partial)
        raise FrameTruncatedError(f"peer closed after {got} of {HEADER_SIZE} length bytes") from None
    length = _body_length(header, max_size)
    try:
        body = await reader.readexactly(length)
    except asyncio.IncompleteReadError as exc:
        raise FrameTruncatedError(f"peer closed after {len(exc.partial)} of {length} frame bytes") from None
    return decode_frame(body)


class FrameDecoder:
    """Incremental decoder for frames arriving in arbitrary pieces (an HTTP body streamed by httpx).

    Keeps at most one frame's bytes buffered; ``close()`` tells a clean end from a cut one.
    """

    def __init__(self, *, max_size: int = DEFAULT_MAX_FRAME_SIZE) -> None:
        self._max_size = max_size
        self._buffer = bytearray()
        self._need: int | None = None  # body length of the frame being read, once its header is in

    def feed(self, data: bytes) -> list[dict[str, Any]]:
        self._buffer += data
        frames: list[dict[str, Any]] = []
        while True:
            if self._need is None:
                if len(self._buffer) < HEADER_SIZE:
                    return frames
                self._need = _body_length(bytes(self._buffer[:HEADER_SIZE]), self._max_size)
                del self._buffer[:HEADER_SIZE]
            if len(self._buffer) < self._need:
                return frames
            body = bytes(self._buffer[: self._need])
            del self._buffer[: self._need]
            self._need = None
            frames.append(decode_frame(body))

    def close(self) -> None:
        """Raise if the stream ended inside a frame."""
        if self._need is not None or self._buffer:
            raise FrameTruncatedError("stream ended in the middle of a frame")
