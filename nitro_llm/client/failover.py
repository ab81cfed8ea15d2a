"""Replica loss is survivable: a request cut by a replica's death is sent again, whole, to another one.

Behind a load balancer any replica can answer any turn: a conversation lives on the client (the
history is sent with every turn), the kms protocol's data key opens on every replica, and the
attested protocol's fleet key is the same on every replica. So when a request fails in a way that
says "this replica is gone or cannot serve" (the gateway unreachable or cut mid-answer, the balancer's
502/503, the enclave down, busy, without credentials or without the fleet key: every retryable
error), the client seals the whole question again (a new request id, timestamp and response key:
the enclave would refuse a replay) and sends it; the balancer routes it to a replica that is up.

A half-streamed answer is never spliced. If the cut answer had already yielded pieces, the new
attempt is preceded by a marker piece, ``AnswerChunk(restarted=CODE)``, meaning "discard everything
before this": the pieces after it are one complete answer on their own. ``ask`` and ``chat`` print
``[answer discarded: CODE; asking again]`` on the line after the cut text, then the whole new answer.
Nothing is retried after the answer completed, and a refusal that is not retryable (verification
failed, a tampered stream, a bad request) is raised at once: retrying cannot change it.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Unpack

from nitro_llm.client.protocol_choice import Conversation
from nitro_llm.client.wire import AnswerChunk
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.messages import AnswerOptions

log = logging.getLogger(__name__)

DEFAULT_ATTEMPTS = 4
BASE_DELAY = 0.2
MAX_DELAY = 2.0

#: Not marked retryable by their sender, yet a replica's death: a balancer's 502 (its server closed
#: the connection before answering).
REPLICA_LOST_CODES = frozenset({"http_502"})


def fails_over(exc: NitroLLMError) -> bool:
    """Whether another attempt (on another replica) may succeed where this one failed."""
    return exc.retryable or exc.code in REPLICA_LOST_CODES


class FailoverConversation:
    """A conversation whose turns survive the loss of the replica answering them.

    ``attempts``: tries per turn, the first included. Pauses between tries are jittered and grow from
    ``base_delay`` to ``max_delay``; ``sleep`` and ``rng`` are seams for tests. Other attributes
    (``verify``, ``describe``, ``last_wire``) are the wrapped conversation's.
    """

    def __init__(
        self,
        inner: Conversation,
        *,
        attempts: int = DEFAULT_ATTEMPTS,
        base_delay: float = BASE_DELAY,
        max_delay: float = MAX_DELAY,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError("attempts must be at least 1")
        self._inner = inner
        self._attempts = attempts
        self._base_delay = base_delay
        self._max_delay = max_delay
        self._sleep = sleep
        self._rng = rng or random.Random()  # jitter, not a secret
        self.retries = 0
        """Turns sent again so far (each re-send counts once)."""
        self.discarded = 0
        """Cut answers whose shown pieces the consumer was told to discard."""

    def stream(
        self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]
    ) -> Iterator[AnswerChunk]:
        for attempt in range(1, self._attempts + 1):
            shown = False
            chunks = self._inner.stream(messages, **options)
            try:
                for chunk in chunks:
                    shown = True
                    yield chunk
                return
            except NitroLLMError as exc:
                if attempt == self._attempts or not fails_over(exc):
                    raise
                self.retries += 1
                log.info("attempt %d failed (%s): sending the question again", attempt, exc.code)
                if shown:
                    self.discarded += 1
                    yield AnswerChunk("", restarted=exc.code)
            finally:
                close = getattr(chunks, "close", None)
                if close is not None:
                    close()  # leaving early (Ctrl-C) closes the HTTP stream, and the enclave stops
            self._sleep(self._rng.uniform(0, min(self._max_delay, self._base_delay * 2 ** (attempt - 1))))

    def close(self) -> None:
        self._inner.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)
