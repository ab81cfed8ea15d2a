"""The one decoder for CBOR that another party sent: everything is decided before any object exists.

Frames from the gateway, sealed requests and answer chunks, attestation documents, NSM responses and
EIF signature sections all arrive from someone the reader does not trust (yet). cbor2 on its own
would build whatever the bytes ask for: datetimes (tag 1), regexes (tag 35), decimals, shared
references, indefinite-length strings, a list announced with 2^64 items. So ``decode`` first walks
the item's *headers* only, with no object built, and refuses, with the caller's typed error:

- input above ``max_size`` bytes, or an item that does not end exactly at the last byte;
- a length or item count announced larger than the bytes that are left (no allocation on trust);
- nesting above ``max_depth`` containers (arrays, maps and tags each count, empty ones too);
- more than ``max_items`` data items;
- every tag, except ``outer_tag`` as the outermost item (COSE_Sign1's tag 18);
- indefinite lengths, break codes, reserved encodings, ``undefined`` and other simple values;
- map keys other than integers and text (only text with ``text_keys_only``).

Only bytes that passed this walk reach cbor2, which then builds plain values (str, bytes, int, float,
bool, None, list, dict, and the allowed outer ``CBORTag``) and refuses duplicate map keys. Whatever
goes wrong surfaces as ``error(message)``, never as a cbor2 or Python error.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import cbor2

ErrorType = Callable[[str], Exception]

# Major types (RFC 8949 section 3.1).
_UINT, _NINT, _BYTES, _TEXT, _ARRAY, _MAP, _TAG, _SIMPLE = range(8)
_INDEFINITE = 31
_FALSE, _TRUE, _NULL, _UNDEFINED = 20, 21, 22, 23
_FLOATS = (25, 26, 27)


def decode(
    data: bytes,
    *,
    what: str,
    error: ErrorType,
    max_size: int,
    max_depth: int,
    max_items: int | None = None,
    outer_tag: int | None = None,
    text_keys_only: bool = False,
) -> object:
    """Decode exactly one CBOR item from ``data``, or raise ``error``; ``what`` names it in messages."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise error(f"{what} must be bytes, not {type(data).__name__}")
    data = bytes(data)
    if not data:
        raise error(f"{what} is empty")
    if len(data) > max_size:
        raise error(f"{what} is {len(data)} bytes, above the {max_size}-byte limit")
    scan(
        data,
        what=what,
        error=error,
        max_depth=max_depth,
        max_items=max_items if max_items is not None else len(data),
        outer_tag=outer_tag,
        text_keys_only=text_keys_only,
    )
    return _build(data, what=what, error=error, max_depth=max_depth, outer_tag=outer_tag)


def scan(
    data: bytes,
    *,
    what: str,
    error: ErrorType,
    max_depth: int,
    max_items: int,
    outer_tag: int | None = None,
    text_keys_only: bool = False,
) -> None:
    """Walk one item's headers without building anything; raise ``error`` on anything refused."""
    size = len(data)
    key_types = (_TEXT,) if text_keys_only else (_UINT, _NINT, _TEXT)
    # One entry per open container: [items still expected, is a map]. Map entries count keys and values.
    open_containers: list[list[int]] = []
    pos = items = 0

    def refuse(reason: str) -> Exception:
        return error(f"{what} is refused by the strict CBOR decoder: {reason} (at byte {pos})")

    while True:
        if pos >= size:
            raise refuse("it ends inside an item")
        start = pos
        initial = data[pos]
        major, info = initial >> 5, initial & 0x1F
        pos += 1
        if info < 24:
            arg = info
        elif info < 28:
            width = 1 << (info - 24)
            if width > size - pos:
                raise refuse("it ends inside an item's header")
            arg = int.from_bytes(data[pos : pos + width], "big")
            pos += width
        elif info == _INDEFINITE:
            if major in (_BYTES, _TEXT, _ARRAY, _MAP):
                raise refuse("indefinite-length items are not allowed")
            raise refuse("a break code or an invalid header")
        else:
            raise refuse(f"reserved header value {info}")
        items += 1
        if items > max_items:
            raise refuse(f"more than {max_items} items")
        parent = open_containers[-1] if open_containers else None
        if parent is not None:
            if parent[1] and parent[0] % 2 == 0 and major not in key_types:
                raise refuse("a map key must be " + ("text" if text_keys_only else "an integer or text"))
            parent[0] -= 1
        if major in (_BYTES, _TEXT):
            if arg > size - pos:
                raise refuse(f"a string announces {arg} bytes, only {size - pos} remain")
            pos += arg
        elif major in (_ARRAY, _MAP, _TAG):
            if len(open_containers) + 1 > max_depth:
                raise refuse(f"nesting deeper than {max_depth}")
            if major == _TAG:
                if arg != outer_tag or start != 0:
                    raise refuse(f"CBOR tag {arg} is not allowed")
                count = 1
            else:
                count = arg * 2 if major == _MAP else arg
                if count > size - pos:  # each item takes at least one byte
                    raise refuse(f"a container announces {arg} entries, only {size - pos} bytes remain")
            if count:
                open_containers.append([count, major == _MAP])
        elif major == _SIMPLE and info not in (_FALSE, _TRUE, _NULL, *_FLOATS):
            raise refuse("undefined and unassigned simple values are not allowed")
        while open_containers and open_containers[-1][0] == 0:
            open_containers.pop()
        if not open_containers:
            break
    if pos != size:
        raise refuse(f"{size - pos} trailing bytes after the item")


def _build(data: bytes, *, what: str, error: ErrorType, max_depth: int, outer_tag: int | None) -> object:
    """cbor2 builds the values of bytes ``scan`` accepted; only duplicate keys or bad UTF-8 remain to fail."""

    def only_outer_tag(tag: cbor2.CBORTag, _immutable: bool) -> cbor2.CBORTag:
        if tag.tag != outer_tag:  # unreachable after scan; a second lock on the same door
            raise ValueError(f"unexpected CBOR tag {tag.tag}")
        return tag

    stream = io.BytesIO(data)
    try:
        value = cbor2.CBORDecoder(
            stream,
            tag_hook=only_outer_tag,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,  # keys are integers or text: scan refused every other kind
        ).decode()
    except Exception as exc:  # cbor2 raises assorted types; each means "not CBOR we accept"
        raise error(f"{what} is not valid CBOR ({type(exc).__name__})") from None
    if stream.tell() != len(data):
        raise error(f"{what} has {len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value
