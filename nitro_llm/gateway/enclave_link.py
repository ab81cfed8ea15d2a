"""The gateway's side of the gateway <-> enclave link.

The gateway never decodes what the enclave sends beyond the frame type: answer chunks are sealed for
the client. It relays frames as they come so that streaming survives end to end, and it turns link
failures into typed gateway errors that carry no content.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator
from typing import Protocol

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.errors import EnclaveTimeout, EnclaveUnavailable
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.protocol.errors import FrameTooLargeError
from nitro_llm.protocol.frame_codec import HEADER_SIZE, decode_frame, encode_frame, read_frame_async
from nitro_llm.transport import open_connection


class EnclaveLink(Protocol):
    """What the gateway needs of the enclave: the seam ``create_app(link=...)`` takes. The real one is
    :class:`TransportLink`; tests hand in a scripted one that never opens a socket."""

    async def call(self, frame: dict[str, object], timeout: float = 10.0) -> dict[str, object]:
        """One request frame, one reply frame; link trouble raises a :class:`GatewayError`."""
        ...

    def infer(self, envelope: bytes) -> AsyncGenerator[bytes, None]:
        """Whole answer frames as they arrive, the last one final or an error frame."""
        ...


class TransportLink:
    """The enclave link over :mod:`nitro_llm.transport` (Unix socket, vsock or TCP, from settings)."""

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    @contextlib.asynccontextmanager
    async def _connected(self) -> AsyncIterator[tuple[asyncio.StreamReader, asyncio.StreamWriter]]:
        try:
            # Connected on the event loop, not in a worker thread: a thread hop per request cost
            # more than the rest of the relay (measured by 'nitro-llm bench -s b').
            reader, writer = await open_connection(self.settings.enclave, self.settings.connect_timeout)
        except (OSError, NitroLLMError) as exc:
            raise EnclaveUnavailable(f"cannot reach the enclave ({type(exc).__name__})") from None
        try:
            yield reader, writer
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def call(self, frame: dict[str, object], timeout: float = 10.0) -> dict[str, object]:
        """One request frame, one reply frame (ping, credentials)."""
        async with self._connected() as (reader, writer):
            try:
                writer.write(encode_frame(frame))
                await writer.drain()
                reply = await asyncio.wait_for(
                    read_frame_async(reader, max_size=self.settings.max_frame_bytes), timeout=timeout
                )
            except TimeoutError:
                raise EnclaveTimeout("the enclave did not reply in time") from None
            except (OSError, NitroLLMError) as exc:
                raise EnclaveUnavailable(f"the enclave link failed ({type(exc).__name__})") from None
        if reply is None:
            raise EnclaveUnavailable("the enclave closed the link without replying")
        return reply

    async def infer(self, envelope: bytes) -> AsyncGenerator[bytes, None]:
        """Send a sealed envelope; yield answer frames as they arrive, until the final or an error frame.

        Each yielded piece is one or more whole frames, each checked to decode as a frame; frames
        that arrived together are relayed together (one HTTP chunk rather than one per frame).

        The first frame is awaited before anything is yielded so that an unreachable or failing
        enclave becomes a proper HTTP status instead of a 200 with a broken body.
        """
        async with self._connected() as (reader, writer):
            writer.write(encode_frame({"t": "infer", "envelope": envelope}))
            await writer.drain()
            timeout = self.settings.first_frame_timeout
            pending = bytearray()
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(_READ_SIZE), timeout=timeout)
                    ready, done = split_frames(pending, data, self.settings.max_frame_bytes)
                except TimeoutError:
                    raise EnclaveTimeout("the enclave went silent mid-answer") from None
                except (OSError, NitroLLMError) as exc:
                    raise EnclaveUnavailable(
                        f"the enclave link broke mid-answer ({type(exc).__name__})"
                    ) from None
                if ready:
                    timeout = self.settings.idle_timeout
                    yield ready
                if done:
                    return
                if not data:
                    raise EnclaveUnavailable("the enclave closed the link before the final answer frame")


_READ_SIZE = 2**16


def split_frames(pending: bytearray, data: bytes, max_size: int) -> tuple[bytes, bool]:
    """Append ``data`` to ``pending`` and take every complete frame off it, as bytes.

    Returns the complete frames and whether the last one ends the answer (an error frame or the
    final chunk; anything after it is dropped). A frame over ``max_size`` or that does not decode
    raises, as reading it frame by frame would.
    """
    pending += data
    out = bytearray()
    while len(pending) >= HEADER_SIZE:
        length = int.from_bytes(pending[:HEADER_SIZE], "big")
        if length > max_size:
            raise FrameTooLargeError(f"frame of {length} bytes exceeds the maximum of {max_size}")
        end = HEADER_SIZE + length
        if len(pending) < end:
            break
        frame = decode_frame(bytes(pending[HEADER_SIZE:end]))
        out += pending[:end]
        del pending[:end]
        if frame.get("t") == "error" or frame.get("final") is True:
            return bytes(out), True
    return bytes(out), False
