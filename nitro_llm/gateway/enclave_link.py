"""The gateway's side of the gateway <-> enclave link.

The gateway never decodes what the enclave sends beyond the frame type: answer chunks are sealed for
the client. It relays frames as they come so that streaming survives end to end, and it turns link
failures into typed gateway errors that carry no content.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.errors import EnclaveTimeout, EnclaveUnavailable
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.protocol.framing import encode_frame, read_frame_async
from nitro_llm.transport import connect


class EnclaveLink:
    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings

    async def _open(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        try:
            sock = await asyncio.to_thread(connect, self.settings.enclave, self.settings.connect_timeout)
            sock.setblocking(False)
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
        """Send a sealed envelope; yield each answer frame, encoded, until the final or an error frame.

        The first frame is awaited before anything is yielded so that an unreachable or failing
        enclave becomes a proper HTTP status instead of a 200 with a broken body.
        """
        reader, writer = await self._open()
        try:
            writer.write(encode_frame({"t": "infer", "envelope": envelope}))
            await writer.drain()
            timeout = self.settings.first_frame_timeout
            while True:
                try:
                    frame = await asyncio.wait_for(
                        read_frame_async(reader, max_size=self.settings.max_frame_bytes), timeout=timeout
                    )
                except TimeoutError:
                    raise EnclaveTimeout("the enclave went silent mid-answer") from None
                except (OSError, NitroLLMError) as exc:
                    raise EnclaveUnavailable(
                        f"the enclave link broke mid-answer ({type(exc).__name__})"
                    ) from None
                if frame is None:
                    raise EnclaveUnavailable("the enclave closed the link before the final answer frame")
                timeout = self.settings.idle_timeout
                yield encode_frame(frame)
                if frame.get("t") == "error" or frame.get("final") is True:
                    return
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()
