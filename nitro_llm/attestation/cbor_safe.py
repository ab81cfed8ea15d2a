"""Decoding CBOR that came from someone we do not trust yet.

Attestation documents arrive from the network before anything about them is verified, so the decoder
is the first code an attacker reaches. It runs with a size cap, a small nesting limit, no duplicate
map keys (two parsers could otherwise disagree on which value was signed), no trailing bytes, and no
semantic tags: cbor2 would otherwise build datetimes, decimals, regexes or shared references from
attacker input. Only tag 18 (COSE_Sign1) passes through, as a ``CBORTag`` the caller unwraps.
Whatever goes wrong inside the decoder surfaces as ``SchemaError``, never as a cbor2 or Python error.
"""

from __future__ import annotations

import io
from typing import NoReturn

import cbor2

from nitro_llm.attestation.errors import SchemaError

#: Tag 18 is COSE_Sign1 (RFC 9052); the only tag a Nitro document may carry, and only outermost.
COSE_SIGN1_TAG = 18

# Tags cbor2 decodes into rich Python objects by itself (found by probing cbor2 6). Each is refused.
_SEMANTIC_TAGS = (0, 1, 2, 3, 4, 5, 25, 28, 29, 30, 35, 36, 37, 52, 54, 100, 256, 258, 260, 261, 1004, 55799)


def _refuse_semantic(_decoder: object) -> NoReturn:
    raise SchemaError("CBOR semantic tags are not allowed in an attestation document")


_REFUSE_ALL = dict.fromkeys(_SEMANTIC_TAGS, _refuse_semantic)


def _only_cose_tag(tag: cbor2.CBORTag, _immutable: bool) -> cbor2.CBORTag:
    """cbor2 6 calls tag hooks as ``(tag, immutable)``."""
    if tag.tag != COSE_SIGN1_TAG:
        raise SchemaError(f"unexpected CBOR tag {tag.tag}")
    return tag


def decode_untrusted(data: bytes, *, max_size: int, max_depth: int, what: str) -> object:
    """Decode exactly one CBOR item from ``data``; ``what`` names it in error messages."""
    if not isinstance(data, bytes | bytearray | memoryview):
        raise SchemaError(f"{what} must be bytes, not {type(data).__name__}")
    if len(data) == 0:
        raise SchemaError(f"{what} is empty")
    if len(data) > max_size:
        raise SchemaError(f"{what} is {len(data)} bytes, above the {max_size}-byte limit")
    stream = io.BytesIO(bytes(data))
    try:
        decoder = cbor2.CBORDecoder(
            stream,
            tag_hook=_only_cose_tag,
            semantic_decoders=_REFUSE_ALL,
            max_depth=max_depth,
            allow_indefinite=False,
            allow_duplicate_keys=False,
        )
        value = decoder.decode()
    except SchemaError:
        raise
    except RecursionError:
        raise SchemaError(f"{what} nests too deeply") from None
    except Exception as exc:
        cause = exc.__cause__ if isinstance(exc.__cause__, SchemaError) else None
        if cause is not None:
            raise SchemaError(f"{what}: {cause.message}") from None
        raise SchemaError(f"{what} is not valid CBOR ({type(exc).__name__})") from None
    if stream.tell() != len(data):
        raise SchemaError(f"{what} has {len(data) - stream.tell()} trailing bytes after the CBOR item")
    return value
