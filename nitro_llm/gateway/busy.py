"""Turn the enclave's "too busy" refusal into HTTP 429 with Retry-After.

The enclave answers a request it cannot queue with one error frame. Relayed as a 200 body, a
client would learn it only after parsing frames, and a load balancer never; so when the *first*
frame is such a refusal the gateway answers 429 instead. Error frames carry codes and counts,
never content, so reading the code here keeps the gateway blind to what users ask.
"""

from __future__ import annotations

from nitro_llm.errors import NitroLLMError
from nitro_llm.gateway.errors import EnclaveBusy
from nitro_llm.protocol.frame_codec import decode_frame

BUSY_CODES = frozenset({"enclave_busy", "replay_cache_full"})
_HEADER = 4


def refusal_code(first: bytes) -> str | None:
    """The code of the enclave's refusal when ``first`` (what the enclave link yielded first: whole
    frames, length prefixes included) is one error frame; None for an answer."""
    length = int.from_bytes(first[:_HEADER], "big")
    if length > 4096:  # answer chunks can be large; a refusal never is
        return None
    try:
        frame = decode_frame(first[_HEADER : _HEADER + length])
    except NitroLLMError:
        return None
    code = frame.get("code")
    return code if frame.get("t") == "error" and isinstance(code, str) else None


def busy_refusal(first: bytes) -> EnclaveBusy | None:
    code = refusal_code(first)
    return EnclaveBusy(f"the enclave's queue is full ({code})") if code in BUSY_CODES else None
