"""Turn the enclave's "too busy" refusal into HTTP 429 with Retry-After.

The enclave answers a request it cannot queue with one error frame. Relayed as a 200 body, a
client would learn it only after parsing frames, and a load balancer never; so when the *first*
frame is such a refusal the gateway answers 429 instead. Error frames carry codes and counts,
never content, so reading the code here keeps the gateway blind to what users ask.
"""

from __future__ import annotations

from nitro_llm.gateway.errors import EnclaveBusy
from nitro_llm.gateway.first_frame import leading_error_code

BUSY_CODES = frozenset({"enclave_busy", "replay_cache_full"})


def busy_refusal(first: bytes) -> EnclaveBusy | None:
    """``first``: what the enclave link yielded first (whole frames, length prefixes included)."""
    code = leading_error_code(first)
    if code not in BUSY_CODES:
        return None
    return EnclaveBusy(f"the enclave's queue is full ({code})")
