"""CBOR for the wire protocols: deterministic encoding, and decoding through the one strict decoder.

Every peer of the protocol is untrusted by another, so each map a peer sent is read by
``nitro_llm.cbor_strict``: its structure (size, depth, item count, no tags, no indefinite lengths,
text keys only) is decided on the bytes before cbor2 builds anything, and the values that come out
are the handful of plain types the contracts use.
"""

from __future__ import annotations

from typing import Any

import cbor2

from nitro_llm import cbor_strict
from nitro_llm.errors import ProtocolError

# Our deepest structure is request -> messages -> message -> content (4); a little slack for "usage".
MAX_DEPTH = 8
#: Above any frame or sealed payload we accept (their own limits are tighter); no input is larger.
MAX_SIZE = 64 * 1024 * 1024
#: Data items in one map: a full request (512 messages of a few fields each) is far below it.
MAX_ITEMS = 1 << 16


def canonical(value: Any) -> bytes:
    """Deterministic CBOR (RFC 8949 core rules): the AAD must be the same bytes on both sides."""
    return cbor2.dumps(value, canonical=True)


def dumps(value: Any) -> bytes:
    return cbor2.dumps(value)


def decode_map(
    data: bytes, *, what: str, error: type[ProtocolError], max_size: int = MAX_SIZE
) -> dict[str, Any]:
    """Decode exactly one CBOR map with text keys and plain values, or raise ``error``."""
    value = cbor_strict.decode(
        data,
        what=what,
        error=error,
        max_size=max_size,
        max_depth=MAX_DEPTH,
        max_items=MAX_ITEMS,
        text_keys_only=True,
    )
    if not isinstance(value, dict):
        raise error(f"{what} must be a CBOR map, got {type(value).__name__}")
    return value


def check_sendable(data: bytes, *, what: str, error: type[ProtocolError], max_size: int = MAX_SIZE) -> None:
    """Raise ``error`` unless ``decode_map`` would accept the structure of ``data``: senders refuse
    what their peer would refuse (a datetime, or an integer above 64 bits that cbor2 writes as a tag)."""
    if len(data) > max_size:
        raise error(f"{what} is {len(data)} bytes, above the {max_size}-byte limit")
    cbor_strict.scan(
        data, what=what, error=error, max_depth=MAX_DEPTH, max_items=MAX_ITEMS, text_keys_only=True
    )


def is_int_in(value: Any, low: int, high: int) -> bool:
    """An integer within bounds; CBOR booleans decode as Python ints' subclass and are not numbers here."""
    return isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
