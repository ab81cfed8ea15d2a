"""A turn cut by a lost replica is sent again, whole; a half-shown answer is discarded, never spliced.

Scripted conversations (no network): each attempt yields some pieces and then fails, or answers. The
pause between attempts goes through an injected sleep, so nothing here waits.
"""

from __future__ import annotations

import io
import random
from collections.abc import Iterator

import pytest

from nitro_llm.cli.client import show_answer
from nitro_llm.client.errors import GatewayUnreachable, ServiceRefusedError
from nitro_llm.client.failover import FailoverConversation
from nitro_llm.client.wire import AnswerChunk
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.errors import ChunkGapError


class Scripted:
    """Attempt i yields ``pieces[i]`` then raises ``errors[i]`` (None: ends with a final piece)."""

    def __init__(self, *attempts: tuple[list[str], NitroLLMError | None]) -> None:
        self.attempts = list(attempts)
        self.calls = 0
        self.closed_streams = 0

    def stream(self, messages, **options) -> Iterator[AnswerChunk]:
        pieces, error = self.attempts[self.calls]
        self.calls += 1
        try:
            for text in pieces:
                yield AnswerChunk(text)
            if error is not None:
                raise error
            yield AnswerChunk("", final=True, finish_reason="stop")
        finally:
            self.closed_streams += 1

    def close(self) -> None:
        pass


def failover(inner: Scripted, attempts: int = 4) -> tuple[FailoverConversation, list[float]]:
    pauses: list[float] = []
    return FailoverConversation(inner, attempts=attempts, sleep=pauses.append, rng=random.Random(1)), pauses


LOST = ServiceRefusedError("enclave_unavailable", "the enclave link broke mid-answer", retryable=True)


def test_a_cut_answer_is_discarded_and_the_whole_answer_follows():
    inner = Scripted((["the ", "first "], LOST), (["the ", "whole ", "answer"], None))
    conv, pauses = failover(inner)
    chunks = list(conv.stream([{"role": "user", "content": "q"}]))
    marker = [c for c in chunks if c.restarted]
    assert [c.restarted for c in marker] == ["enclave_unavailable"]
    after = chunks[chunks.index(marker[0]) + 1 :]
    assert "".join(c.text for c in after) == "the whole answer" and after[-1].final
    assert (conv.retries, conv.discarded, inner.calls, len(pauses)) == (1, 1, 2, 1)


def test_ask_prints_the_discard_marker_and_returns_only_the_new_answer():
    inner = Scripted(
        (["half an "], GatewayUnreachable("lost the gateway (RemoteProtocolError)")),
        (["all ", "of it"], None),
    )
    out = io.StringIO()
    answer = show_answer(failover(inner)[0].stream([{"role": "user", "content": "q"}]), out, max_tokens=9)
    assert answer == "all of it"
    assert out.getvalue() == "half an \n[answer discarded: gateway_unreachable; asking again]\nall of it\n"


def test_a_failure_before_any_piece_is_retried_silently():
    inner = Scripted(([], ServiceRefusedError("http_502", "bad gateway")), (["ok"], None))
    conv, _ = failover(inner)
    chunks = list(conv.stream([{"role": "user", "content": "q"}]))
    assert not any(c.restarted for c in chunks) and "".join(c.text for c in chunks) == "ok"
    assert (conv.retries, conv.discarded) == (1, 0)


@pytest.mark.parametrize(
    "error",
    [
        ServiceRefusedError("attested_verification_failed", "refused"),  # retrying cannot change a verdict
        ChunkGapError("a chunk is missing"),  # tampering is not a lost replica
        ServiceRefusedError("bad_request", "malformed"),
    ],
)
def test_what_another_replica_cannot_fix_is_raised_at_once(error):
    inner = Scripted((["x"], error), (["never"], None))
    conv, pauses = failover(inner)
    with pytest.raises(NitroLLMError) as info:
        list(conv.stream([{"role": "user", "content": "q"}]))
    assert info.value is error and inner.calls == 1 and pauses == []


def test_attempts_are_bounded_and_the_last_error_is_raised():
    inner = Scripted(*[(["p"], LOST)] * 3)
    conv, pauses = failover(inner, attempts=3)
    with pytest.raises(ServiceRefusedError):
        list(conv.stream([{"role": "user", "content": "q"}]))
    assert inner.calls == 3 and len(pauses) == 2 and all(0 <= p <= 2.0 for p in pauses)
    assert inner.closed_streams == 3


def test_leaving_early_closes_the_stream_being_read():
    inner = Scripted((["a", "b", "c"], None))
    stream = failover(inner)[0].stream([{"role": "user", "content": "q"}])
    next(stream)
    stream.close()
    assert inner.closed_streams == 1
