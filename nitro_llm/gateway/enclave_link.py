"""The gateway's side of the gateway <-> enclave link.

The gateway never decodes what the enclave sends beyond the frame type: answer chunks are sealed for
the client. It relays frames as they come so that streaming survives end to end, and it turns link
failures into typed gateway errors that carry no content.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import AsyncIterator

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.errors import EnclaveTimeout, EnclaveUnavailable
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.protocol.errors import FrameTooLargeError
from nitro_llm.protocol.framing import HEADER_SIZE, decode_frame, encode_frame, read_frame_async
from nitro_llm.transport.address import parse_address


class EnclaveLink:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            # Connected on the event loop, not in a worker thread: a thread hop per request cost
            # more than the rest of the relay (measured by 'nitro-llm bench -s b').
            address = parse_address(self.settings.enclave)
            sock = socket.socket(address.family, socket.SOCK_STREAM)
            sock.setblocking(False)
            try:
                await asyncio.wait_for(
                    asyncio.get_running_loop().sock_connect(sock, address.sockaddr),
                    self.settings.connect_timeout,
                )
            except BaseException:
                sock.close()
                raise
            return await asyncio.open_connection(sock=sock, limit=2**20)
        except (OSError, NitroLLMError) as exc:
            raise EnclaveUnavailable(f"cannot reach the enclave ({type(exc).__name__})") from None

    async def call(self, frame: dict[str, object], timeout: float = 10.0) -> dict[str, object]:
        """One request frame, one reply frame (ping, credentials)."""
        reader, writer = await self._open()
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
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
        if reply is None:
            raise EnclaveUnavailable("the enclave closed the link without replying")
        return reply

    async def infer(self, envelope: bytes) -> AsyncIterator[bytes]:
        """Send a sealed envelope; yield answer frames as they arrive, until the final or an error frame.

        Each yielded piece is one or more whole frames, each checked to decode as a frame; frames
        that arrived together are relayed together (one HTTP chunk rather than one per frame).

        The first frame is awaited before anything is yielded so that an unreachable or failing
        enclave becomes a proper HTTP status instead of a 200 with a broken body.
        """
        reader, writer = await self._open()
        try:
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
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


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
