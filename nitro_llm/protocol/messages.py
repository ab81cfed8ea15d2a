"""The request a client seals for the enclave: a chat, and how to sample the answer.

Checked on both sides: the client fails early with a useful message, and the enclave, which trusts
nothing it did not decrypt and validate, refuses anything outside these bounds before the model
sees it. Limits are generous (a 20 KB question is ordinary) but finite, so one request cannot
exhaust the enclave's memory.

``stop`` (optional, OpenAI's stop sequences) travels inside the sealed request like the rest, so the
host never learns it; the enclave ends the answer before the first of them (inference/stops.py).

``one_shot`` (optional, ``true`` or absent) says no turn will follow. Keeping a conversation costs
the enclave work after the answer (its KV cells are settled for the next turn) and memory (the kms
data key stays cached for minutes), all wasted on a request that is known to be the last: a proxy's
unnamed request, ``nitro-llm ask``. Sealed like the rest, so the host is not told which requests
are one-shot (in kms it still sees, as before, whether a conversation id ever comes back).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, TypedDict, Unpack

from nitro_llm.protocol.cbor import is_int_in
from nitro_llm.protocol.errors import RequestSchemaError

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})

MAX_MESSAGES = 512
MAX_MESSAGE_CHARS = 256 * 1024
MAX_TOTAL_CHARS = 1024 * 1024
MAX_TOKENS_LIMIT = 4096
DEFAULT_MAX_TOKENS = 256
MAX_TEMPERATURE = 2.0
MAX_SEED = 2**32 - 1
MAX_STOP_SEQUENCES = 4  # OpenAI's limit
MAX_STOP_CHARS = 64  # per stop sequence: the enclave holds back at most this much of a streamed answer


class AnswerOptions(TypedDict, total=False):
    """How a client asks for its answer, as keywords beside the messages: ``stream(messages,
    max_tokens=…, temperature=…, seed=…, stop=…, one_shot=…)``. Every client-side layer (conversations,
    proxy backends) passes them through as ``**options: Unpack[AnswerOptions]`` down to
    :func:`chat_request`, which fills the defaults, so the set is written once and a misspelt keyword
    is a type error."""

    max_tokens: int
    temperature: float
    seed: int | None
    stop: Sequence[str]
    one_shot: bool


_REQUIRED = {"messages", "max_tokens", "temperature"}
_ALLOWED = _REQUIRED | {"seed", "stop", "one_shot"}


@dataclass(frozen=True)
class Message:
    role: Role
    content: str

    def __repr__(self) -> str:  # content may be PHI: keep it out of logs and tracebacks
        return f"Message(role={self.role!r}, content=<{len(self.content)} chars>)"

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass(frozen=True)
class ChatRequest:
    messages: tuple[Message, ...]
    max_tokens: int = DEFAULT_MAX_TOKENS
    temperature: float = 0.0
    seed: int | None = None
    stop: tuple[str, ...] = ()  # end the answer before the first of these; never part of it
    one_shot: bool = False  # no turn follows: the enclave keeps nothing of this conversation

    def __post_init__(self) -> None:
        _check_messages(self.messages)
        _check_sampling(self.max_tokens, self.temperature, self.seed)
        _check_stop(self.stop)
        if not isinstance(self.one_shot, bool):
            raise RequestSchemaError("'one_shot' must be true, or absent")

    def __repr__(self) -> str:  # stop sequences may quote the conversation: only their count
        return (
            f"ChatRequest(messages=<{len(self.messages)}>, max_tokens={self.max_tokens}, "
            f"temperature={self.temperature}, seed={self.seed}, stop=<{len(self.stop)}>, "
            f"one_shot={self.one_shot})"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [m.to_dict() for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": float(self.temperature),
        }
        if self.seed is not None:
            out["seed"] = self.seed
        if self.stop:  # absent when unused: the request an enclave without stop support accepts
            out["stop"] = list(self.stop)
        if self.one_shot:  # absent when unused, as stop: every other request is sealed as before
            out["one_shot"] = True
        return out

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ChatRequest:
        """Strict: unknown fields are refused so that a typo never silently changes sampling."""
        if not isinstance(data, Mapping):
            raise RequestSchemaError("request must be a map")
        keys = set(data)
        if missing := sorted(_REQUIRED - keys):
            raise RequestSchemaError(f"request is missing fields: {', '.join(missing)}")
        if extra := sorted(str(k) for k in keys - _ALLOWED):
            raise RequestSchemaError(f"request has unknown fields: {', '.join(extra)}")
        raw_messages = data["messages"]
        if not isinstance(raw_messages, list):
            raise RequestSchemaError("'messages' must be a list")
        if len(raw_messages) > MAX_MESSAGES:  # before building objects, so the bound protects memory
            raise RequestSchemaError(f"'messages' has {len(raw_messages)} entries; at most {MAX_MESSAGES}")
        messages = tuple(_message(i, m) for i, m in enumerate(raw_messages))
        raw_stop = data.get("stop", [])
        if not isinstance(raw_stop, list):
            raise RequestSchemaError("'stop' must be a list of strings")
        if len(raw_stop) > MAX_STOP_SEQUENCES:  # before copying: the bound protects memory
            raise RequestSchemaError(f"'stop' has {len(raw_stop)} entries; at most {MAX_STOP_SEQUENCES}")
        if "one_shot" in data and data["one_shot"] is not True:  # one encoding: false is "absent"
            raise RequestSchemaError("'one_shot' must be true, or absent")
        return cls(
            messages=messages,
            max_tokens=data["max_tokens"],
            temperature=data["temperature"],
            seed=data.get("seed"),
            stop=tuple(raw_stop),
            one_shot="one_shot" in data,
        )


def _message(index: int, raw: Any) -> Message:
    if not isinstance(raw, Mapping) or set(raw) != {"role", "content"}:
        raise RequestSchemaError(f"messages[{index}] must be a map with exactly 'role' and 'content'")
    role, content = raw["role"], raw["content"]
    if not isinstance(role, str) or role not in ROLES:
        raise RequestSchemaError(f"messages[{index}].role must be one of {', '.join(sorted(ROLES))}")
    if not isinstance(content, str):
        raise RequestSchemaError(f"messages[{index}].content must be text")
    return Message(role=role, content=content)  # type: ignore[arg-type]  # role checked against ROLES


def _check_messages(messages: tuple[Message, ...]) -> None:
    if not messages:
        raise RequestSchemaError("'messages' is empty; send at least one user message")
    if len(messages) > MAX_MESSAGES:
        raise RequestSchemaError(f"'messages' has {len(messages)} entries; the maximum is {MAX_MESSAGES}")
    total = 0
    for i, m in enumerate(messages):
        if not isinstance(m, Message) or m.role not in ROLES or not isinstance(m.content, str):
            raise RequestSchemaError(f"messages[{i}] is not a valid message")
        if len(m.content) > MAX_MESSAGE_CHARS:
            raise RequestSchemaError(
                f"messages[{i}] has {len(m.content)} characters; the maximum is {MAX_MESSAGE_CHARS}"
            )
        if m.role == "system" and i != 0:
            raise RequestSchemaError(f"messages[{i}] is a system message; only the first message may be one")
        total += len(m.content)
    if total > MAX_TOTAL_CHARS:
        raise RequestSchemaError(f"the conversation has {total} characters; the maximum is {MAX_TOTAL_CHARS}")
    if messages[-1].role != "user":
        raise RequestSchemaError("the last message must come from the user: it is the one to answer")


def _check_sampling(max_tokens: Any, temperature: Any, seed: Any) -> None:
    if not is_int_in(max_tokens, 1, MAX_TOKENS_LIMIT):
        raise RequestSchemaError(f"'max_tokens' must be an integer from 1 to {MAX_TOKENS_LIMIT}")
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
        or not 0.0 <= temperature <= MAX_TEMPERATURE
    ):
        raise RequestSchemaError(f"'temperature' must be a number from 0 to {MAX_TEMPERATURE}")
    if seed is not None and not is_int_in(seed, 0, MAX_SEED):
        raise RequestSchemaError(f"'seed' must be an integer from 0 to {MAX_SEED}, or absent")


def _check_stop(stop: Any) -> None:
    if not isinstance(stop, tuple):
        raise RequestSchemaError("'stop' must be a list of strings")
    if len(stop) > MAX_STOP_SEQUENCES:
        raise RequestSchemaError(f"'stop' has {len(stop)} entries; at most {MAX_STOP_SEQUENCES}")
    for i, sequence in enumerate(stop):
        if not isinstance(sequence, str) or not 1 <= len(sequence) <= MAX_STOP_CHARS:
            raise RequestSchemaError(f"stop[{i}] must be text of 1 to {MAX_STOP_CHARS} characters")


def chat_request(
    messages: list[Mapping[str, str]] | list[Message], **options: Unpack[AnswerOptions]
) -> ChatRequest:
    """Convenience for clients: accept plain ``{"role", "content"}`` dicts or :class:`Message`, and
    one stop sequence as a plain string."""
    built = tuple(m if isinstance(m, Message) else _message(i, m) for i, m in enumerate(messages))
    stop = options.get("stop", ())
    stops = (stop,) if isinstance(stop, str) else tuple(stop)
    return ChatRequest(
        messages=built,
        max_tokens=options.get("max_tokens", DEFAULT_MAX_TOKENS),
        temperature=options.get("temperature", 0.0),
        seed=options.get("seed"),
        stop=stops,
        one_shot=options.get("one_shot", False),
    )
