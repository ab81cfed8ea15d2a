"""Strict CBOR for untrusted bytes: one item, no trailing data, plain types only.

cbor2 on its own accepts trailing bytes, duplicate map keys and dozens of semantic tags (dates,
decimals, regexes, shared references). Every peer of the protocol is untrusted by another, so each
decoded value is held to the handful of types the contracts use and anything else is refused.
"""

from __future__ import annotations

import io
from collections.abc import Mapping
from typing import Any

import cbor2

from nitro_llm.errors import ProtocolError

# Our deepest structure is request -> messages -> message -> content (4); a little slack for "usage".
MAX_DEPTH = 8
_PLAIN_SCALARS = (str, bytes, int, float, bool, type(None))


def canonical(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 core rules): the AAD must be the same bytes on both sides."""
    return cbor2.dumps(value, canonical=True)


def dumps(value: Any) -> bytes:
    return cbor2.dumps(value)


def decode_map(data: bytes, *, what: str, error: type[ProtocolError]) -> dict[str, Any]:
    """Decode exactly one CBOR map with text keys and plain values, or raise ``error``."""
    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream, max_depth=MAX_DEPTH, allow_duplicate_keys=False, strict_hashable_types=True
        ).decode()
    except Exception as exc:  # cbor2 raises assorted types on hostile input; all mean "not CBOR we accept"
        raise error(f"{what} is not valid CBOR ({type(exc).__name__})") from None
    if stream.tell() != len(data):
        raise error(f"{what} has {len(data) - stream.tell()} trailing bytes after its CBOR item")
    if not isinstance(value, dict):
        raise error(f"{what} must be a CBOR map, got {type(value).__name__}")
    _check_plain(value, what=what, error=error)
    return value


def _check_plain(value: Any, *, what: str, error: type[ProtocolError]) -> None:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, Mapping):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise error(f"{what} has a {type(key).__name__} map key; only text keys are allowed")
                stack.append(inner)
        elif isinstance(item, list):
            stack.extend(item)
        elif not isinstance(item, _PLAIN_SCALARS):
            raise error(f"{what} holds a {type(item).__name__}; only plain CBOR types are allowed")


def is_int_in(value: Any, low: int, high: int) -> bool:
    """An integer within bounds; CBOR booleans decode as Python ints' subclass and are not numbers here."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
