"""What the gateway may read of the enclave's first answer frame: the code of an error frame.

The gateway never opens answer chunks, but two refusals change what it does with a request: a full
queue becomes HTTP 429 (gateway/busy.py), and expired role credentials make it hand over fresh ones
and resend (gateway/credential_push.py). Both arrive as one error frame before anything else. Error
frames carry codes and counts, never content, so reading the code keeps the gateway blind to what
users ask.
"""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.frame_codec import HEADER_SIZE, decode_frame

MAX_ERROR_FRAME = 4096
"""Answer chunks can be large; an error frame never is, so nothing longer is decoded here."""


def leading_error_code(first: bytes) -> str | None:
    """``first``: what the enclave link yielded first (whole frames, length prefixes included).
    The code of its first frame if that is an error frame, else None."""
    length = int.from_bytes(first[:HEADER_SIZE], "big")
    if length > MAX_ERROR_FRAME:
        return None
    try:
        frame = decode_frame(first[HEADER_SIZE : HEADER_SIZE + length])
    except NitroLLMError:
        return None
    code = frame.get("code")
    return code if frame.get("t") == "error" and isinstance(code, str) else None
