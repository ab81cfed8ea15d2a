"""A deterministic engine: answers with the last user message, word by word.

For protocol and server tests (no model, instant, exact expected output) and for benchmarking the
transport and cryptography without the model's cost. Never the default: it is chosen explicitly.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator, Sequence
from typing import Unpack

from nitro_llm.inference.engine import FinishReason, GenerateArgs, TokenChunk, Usage
from nitro_llm.protocol.messages import Message

_PIECES = re.compile(r"\S+\s*|\s+")


DELAY_ENV = "NITRO_LLM_ECHO_DELAY_MS"
"""Milliseconds per piece when no delay is given: lets a test hold an answer mid-stream (a replica
killed while it answers, local/fleet.py's tests) without a model. Not measured: echo is a dev engine."""


class EchoEngine:
    def __init__(self, *, delay_seconds: float | None = None) -> None:
        if delay_seconds is None:
            delay_seconds = float(os.environ.get(DELAY_ENV, "0") or 0) / 1000
        self._delay = delay_seconds

    @property
    def name(self) -> str:
        return "echo"

    def generate(self, messages: Sequence[Message], **args: Unpack[GenerateArgs]) -> Iterator[TokenChunk]:
        # ``cache_key`` is ignored: echoing keeps nothing per conversation
        max_tokens, cancel = args["max_tokens"], args.get("cancel")
        prompt_tokens = sum(len(_PIECES.findall(m.content)) for m in messages)
        last_user = next(m.content for m in reversed(messages) if m.role == "user")
        pieces = _PIECES.findall(last_user)
        sent = 0
        for piece in pieces[:max_tokens]:
            if cancel is not None and cancel.is_set():
                yield TokenChunk("", "cancelled", Usage(prompt_tokens, sent))
                return
            if self._delay:
                time.sleep(self._delay)
            sent += 1
            yield TokenChunk(piece)
        reason: FinishReason = "length" if len(pieces) > max_tokens else "stop"
        yield TokenChunk("", reason, Usage(prompt_tokens, sent))
