"""The OpenAI chat-completions shapes the proxy speaks: parse a request, build responses and chunks.

Lenient where OpenAI clients routinely send options that do not change the answer's meaning (``user``,
``stream_options``, penalties, ``top_p``), strict where silently ignoring an option would return
something the caller did not ask for (``n`` > 1, tools, images, JSON mode, logprobs). ``stop`` (a
string or up to four) is sealed into the request and applied inside the enclave. ``prompt_cache_key``
(or the ``X-Nitro-Conversation`` header) names the chat a request continues, so its turns share the
enclave's cache (proxy/conversations.py); it is never sent on. The conversation itself is then held to
the enclave's request schema before anything is sealed.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nitro_llm.protocol.messages import (
    DEFAULT_MAX_TOKENS,
    MAX_STOP_SEQUENCES,
    MAX_TOKENS_LIMIT,
    ChatRequest,
    chat_request,
)
from nitro_llm.proxy.conversations import BODY_FIELD, conversation_name
from nitro_llm.proxy.errors import InvalidRequestError, UnsupportedFeatureError

# Deterministic by default: the same question gives the same answer unless the caller asks otherwise.
DEFAULT_TEMPERATURE = 0.0
_ROLE_ALIASES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
_REFUSED_IF_SET = ("tools", "functions", "tool_choice", "function_call", "logprobs", "top_logprobs", "audio")


@dataclass(frozen=True)
class CompletionRequest:
    chat: ChatRequest
    stream: bool
    include_usage: bool
    requested_model: str
    conversation: str | None = None
    """The caller's name for the chat (None: a conversation of its own); stays on this machine."""


def parse_request(body: Any, *, conversation_headers: Sequence[str] = ()) -> CompletionRequest:
    """``conversation_headers``: the request's ``X-Nitro-Conversation`` values (at most one)."""
    if not isinstance(body, Mapping):
        raise InvalidRequestError("the request body must be a JSON object")
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise InvalidRequestError("'model' is required (GET /v1/models lists the one this proxy serves)")
    for name in _REFUSED_IF_SET:
        if body.get(name) not in (None, False, [], {}):
            raise UnsupportedFeatureError(f"'{name}' is not supported by the confidential model")
    if body.get("n", 1) != 1:
        raise UnsupportedFeatureError("'n' must be 1: the proxy returns one answer per request")
    fmt = body.get("response_format")
    if fmt is not None and (not isinstance(fmt, Mapping) or fmt.get("type") != "text"):
        raise UnsupportedFeatureError("'response_format' other than text is not supported")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise InvalidRequestError("'stream' must be true or false")
    options = body.get("stream_options") or {}
    include_usage = bool(isinstance(options, Mapping) and options.get("include_usage"))
    max_tokens = body.get("max_completion_tokens", body.get("max_tokens"))
    if max_tokens is None:
        max_tokens = DEFAULT_MAX_TOKENS
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise InvalidRequestError("'max_tokens' must be a positive integer")
    max_tokens = min(max_tokens, MAX_TOKENS_LIMIT)  # OpenAI semantics: an upper bound, not a demand
    temperature = body.get("temperature")
    if temperature is None:
        temperature = DEFAULT_TEMPERATURE
    if (
        not isinstance(temperature, int | float)
        or isinstance(temperature, bool)
        or not math.isfinite(temperature)
    ):
        raise InvalidRequestError("'temperature' must be a number")
    seed = body.get("seed")
    messages = _messages(body.get("messages"))
    stop = _stop(body.get("stop"))
    chat = chat_request(messages, max_tokens=max_tokens, temperature=float(temperature), seed=seed, stop=stop)
    conversation = conversation_name(list(conversation_headers), body.get(BODY_FIELD))
    return CompletionRequest(
        chat=chat,
        stream=stream,
        include_usage=include_usage,
        requested_model=model,
        conversation=conversation,
    )


def _stop(raw: Any) -> tuple[str, ...]:
    """OpenAI's ``stop``: absent or null, one string, or a list of up to four strings."""
    if raw is None:
        return ()
    if isinstance(raw, str):
        return (raw,)
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise InvalidRequestError("'stop' must be a string or a list of strings")
    if len(raw) > MAX_STOP_SEQUENCES:
        raise InvalidRequestError(f"'stop' may hold at most {MAX_STOP_SEQUENCES} sequences")
    return tuple(raw)


def _messages(raw: Any) -> list[Mapping[str, str]]:
    if not isinstance(raw, list) or not raw:
        raise InvalidRequestError("'messages' must be a non-empty list")
    out: list[Mapping[str, str]] = []
    for i, message in enumerate(raw):
        if not isinstance(message, Mapping):
            raise InvalidRequestError(f"messages[{i}] must be an object")
        role = _ROLE_ALIASES.get(message.get("role"))  # type: ignore[arg-type]
        if role is None:
            raise UnsupportedFeatureError(f"messages[{i}].role must be system, developer, user or assistant")
        out.append({"role": role, "content": _content(i, message.get("content"))})
    return out


def _content(index: int, content: Any) -> str:
    """A string, or a list of text parts (what newer clients send); anything else is refused."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for part in content:
            if (
                not isinstance(part, Mapping)
                or part.get("type") != "text"
                or not isinstance(part.get("text"), str)
            ):
                raise UnsupportedFeatureError(f"messages[{index}].content may only hold text parts")
            parts.append(part["text"])
        return "".join(parts)
    raise InvalidRequestError(f"messages[{index}].content must be text")


def completion_id() -> str:
    return "chatcmpl-" + secrets.token_hex(12)


def usage_block(usage: Mapping[str, Any] | None) -> dict[str, int]:
    usage = usage or {}
    prompt = int(usage.get("prompt_tokens", 0) or 0)
    completion = int(usage.get("completion_tokens", 0) or 0)
    total = int(usage.get("total_tokens", prompt + completion) or 0)
    return {"prompt_tokens": prompt, "completion_tokens": completion, "total_tokens": total}


def completion(
    cid: str, model: str, text: str, finish_reason: str, usage: Mapping[str, Any] | None
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": text},
                "finish_reason": finish_reason,
                "logprobs": None,
            }
        ],
        "usage": usage_block(usage),
    }


def chunk(
    cid: str,
    model: str,
    created: int,
    delta: Mapping[str, str],
    finish_reason: str | None = None,
) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [{"index": 0, "delta": dict(delta), "finish_reason": finish_reason, "logprobs": None}],
    }


def usage_chunk(cid: str, model: str, created: int, usage: Mapping[str, Any] | None) -> dict[str, Any]:
    return {
        "id": cid,
        "object": "chat.completion.chunk",
        "created": created,
        "model": model,
        "choices": [],
        "usage": usage_block(usage),
    }


def finish_reason_of(reason: str | None) -> str:
    """OpenAI's vocabulary: the enclave says "stop" or "length"; anything else reads as "stop"."""
    return reason if reason in ("stop", "length", "content_filter") else "stop"
