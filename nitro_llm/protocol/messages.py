"""The request a client seals for the enclave: a chat, and how to sample the answer.

Checked on both sides: the client fails early with a useful message, and the enclave, which trusts
nothing it did not decrypt and validate, refuses anything outside these bounds before the model
sees it. Limits are generous (a 20 KB question is ordinary) but finite, so one request cannot
exhaust the enclave's memory.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

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

_REQUIRED = {"messages", "max_tokens", "temperature"}
_ALLOWED = _REQUIRED | {"seed"}


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

    def __post_init__(self) -> None:
        _check_messages(self.messages)
        _check_sampling(self.max_tokens, self.temperature, self.seed)

    def __repr__(self) -> str:
        return (
            f"ChatRequest(messages=<{len(self.messages)}>, max_tokens={self.max_tokens}, "
            f"temperature={self.temperature}, seed={self.seed})"
        )

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "messages": [m.to_dict() for m in self.messages],
            "max_tokens": self.max_tokens,
            "temperature": float(self.temperature),
        }
        if self.seed is not None:
            out["seed"] = self.seed
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
        return cls(
            messages=messages,
            max_tokens=data["max_tokens"],
            temperature=data["temperature"],
            seed=data.get("seed"),
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


def chat_request(
    messages: list[Mapping[str, str]] | list[Message],
    *,
    max_tokens: int = DEFAULT_MAX_TOKENS,
    temperature: float = 0.0,
    seed: int | None = None,
) -> ChatRequest:
    """Convenience for clients: accept plain ``{"role", "content"}`` dicts or :class:`Message`."""
    built = tuple(m if isinstance(m, Message) else _message(i, m) for i, m in enumerate(messages))
    return ChatRequest(messages=built, max_tokens=max_tokens, temperature=temperature, seed=seed)
