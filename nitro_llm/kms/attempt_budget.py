"""How long the KMS call being made right now may wait: chosen by the retry policy, applied by the client.

The enclave's KMS client makes exactly one HTTP attempt per call (botocore's own retries are off, see
``make_kms_client(single_attempt=True)``); the one retry policy (``nitro_llm.enclave.kms_retry``)
decides how many attempts fit in its total deadline and gives each the read timeout that the remaining
budget allows. A context variable carries that timeout from the policy to the client's request, so
concurrent requests sharing one client each keep their own budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

#: Connect timeout of a single-attempt client. The enclave reaches KMS through a local forwarder, so a
#: connection that takes longer than this is not coming; the policy reserves it from every attempt.
ATTEMPT_CONNECT_TIMEOUT_S = 1.0

_read_timeout: ContextVar[float | None] = ContextVar("kms_attempt_read_timeout", default=None)


@contextmanager
def read_timeout(seconds: float) -> Iterator[None]:
    """KMS calls made inside the block wait at most ``seconds`` for each read of the answer."""
    token = _read_timeout.set(seconds)
    try:
        yield
    finally:
        _read_timeout.reset(token)


def current_read_timeout() -> float | None:
    """The read timeout set by the enclosing ``read_timeout`` block, or ``None`` outside one."""
    return _read_timeout.get()
