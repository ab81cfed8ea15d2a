"""The NSM's request/response messages in CBOR, shared by the device driver and the emulator.

The NSM speaks serde's externally tagged enums: a request is ``"DescribeNSM"`` / ``"GetRandom"`` (bare
text for variants without fields) or a one-key map such as ``{"Attestation": {"user_data": ...,
"nonce": ..., "public_key": ...}}`` or ``{"DescribePCR": {"index": i}}``; a response mirrors it
(``{"Attestation": {"document": bytes}}``) or is ``{"Error": "InvalidArgument"}``. Both NSM
implementations exchange exactly these bytes, so the emulator exercises the device code path's
encoding and decoding too.
"""

from __future__ import annotations

from dataclasses import dataclass

import cbor2

from nitro_llm import cbor_strict
from nitro_llm.attestation.errors import NsmError

#: Limits of the Linux NSM driver (``NSM_REQUEST_MAX_SIZE`` / ``NSM_RESPONSE_MAX_SIZE``).
REQUEST_MAX_SIZE = 0x1000
RESPONSE_MAX_SIZE = 0x3000
#: Largest user_data, nonce or public_key an attestation document carries (AWS document spec).
MAX_USER_FIELD = 1024

#: ``ErrorCode`` variants of the NSM API, with what each means for the caller.
ERROR_CODES = {
    "Success": "no error",
    "InvalidArgument": "an argument was invalid",
    "InvalidIndex": "the PCR index is out of range",
    "InvalidResponse": "the response did not match the request",
    "ReadOnlyIndex": "the PCR is locked",
    "InvalidOperation": "the NSM does not support this operation",
    "BufferTooSmall": "the response did not fit the buffer",
    "InputTooLarge": "the request is too large",
    "InternalError": "the NSM failed internally",
}


@dataclass(frozen=True)
class NsmDescription:
    version_major: int
    version_minor: int
    version_patch: int
    module_id: str
    max_pcrs: int
    locked_pcrs: list[int]
    digest: str


@dataclass(frozen=True)
class PcrDescription:
    lock: bool
    data: bytes


def attestation_request(
    user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
) -> bytes:
    fields = {"user_data": user_data, "nonce": nonce, "public_key": public_key}
    for name, value in fields.items():
        if value is not None and not isinstance(value, bytes | bytearray):
            raise NsmError(f"{name} must be bytes or None")
        if value is not None and len(value) > MAX_USER_FIELD:
            raise NsmError(f"{name} is {len(value)} bytes; the NSM accepts at most {MAX_USER_FIELD}")
    return _checked({"Attestation": {k: None if v is None else bytes(v) for k, v in fields.items()}})


def describe_nsm_request() -> bytes:
    return _checked("DescribeNSM")


def describe_pcr_request(index: int) -> bytes:
    if type(index) is not int or not 0 <= index < 2**16:
        raise NsmError(f"PCR index {index!r} is not a 16-bit unsigned integer")
    return _checked({"DescribePCR": {"index": index}})


def get_random_request() -> bytes:
    return _checked("GetRandom")


def _checked(request: object) -> bytes:
    encoded = cbor2.dumps(request)
    if len(encoded) > REQUEST_MAX_SIZE:
        raise NsmError(f"the NSM request is {len(encoded)} bytes, above the {REQUEST_MAX_SIZE}-byte limit")
    return encoded


def request_name(request: object) -> tuple[str, object]:
    """Split a decoded request into its variant name and fields (for the emulator)."""
    if isinstance(request, str):
        return request, None
    if isinstance(request, dict) and len(request) == 1:
        ((name, fields),) = request.items()
        if isinstance(name, str):
            return name, fields
    raise NsmError("malformed NSM request")


def _decode(response: bytes, expected: str) -> object:
    if len(response) > RESPONSE_MAX_SIZE:
        raise NsmError(
            f"the NSM response is {len(response)} bytes, above the {RESPONSE_MAX_SIZE}-byte buffer"
        )
    try:
        value = cbor_strict.decode(
            response, what="the NSM response", error=NsmError, max_size=RESPONSE_MAX_SIZE, max_depth=8
        )
    except NsmError as exc:
        raise NsmError(f"the NSM answered with bytes that are not CBOR we accept: {exc.message}") from None
    if isinstance(value, dict) and len(value) == 1:
        ((name, body),) = value.items()
        if name == "Error":
            code = body if isinstance(body, str) and body in ERROR_CODES else "unknown"
            meaning = ERROR_CODES.get(code, "unknown error code")
            raise NsmError(f"the NSM refused the {expected} request: {code} ({meaning})")
        if name == expected:
            return body
    if value == expected:
        return None
    raise NsmError(f"the NSM answered a {expected} request with something else")


def _field(body: object, name: str, kind: type) -> object:
    if not isinstance(body, dict) or name not in body or type(body[name]) is not kind:
        raise NsmError(f"the NSM response lacks {name} ({kind.__name__})")
    return body[name]


def _bytes(body: object, name: str) -> bytes:
    value = _field(body, name, bytes)
    return value if isinstance(value, bytes) else b""


def _int(body: object, name: str) -> int:
    value = _field(body, name, int)
    return value if isinstance(value, int) else 0


def parse_attestation_response(response: bytes) -> bytes:
    return _bytes(_decode(response, "Attestation"), "document")


def parse_describe_nsm_response(response: bytes) -> NsmDescription:
    body = _decode(response, "DescribeNSM")
    locked = _field(body, "locked_pcrs", list)
    if not isinstance(locked, list) or not all(type(i) is int for i in locked):
        raise NsmError("the NSM response lists non-integer locked PCRs")
    return NsmDescription(
        version_major=_int(body, "version_major"),
        version_minor=_int(body, "version_minor"),
        version_patch=_int(body, "version_patch"),
        module_id=str(_field(body, "module_id", str)),
        max_pcrs=_int(body, "max_pcrs"),
        locked_pcrs=sorted(locked),
        digest=str(_field(body, "digest", str)),
    )


def parse_describe_pcr_response(response: bytes) -> PcrDescription:
    body = _decode(response, "DescribePCR")
    return PcrDescription(lock=bool(_field(body, "lock", bool)), data=_bytes(body, "data"))


def parse_get_random_response(response: bytes) -> bytes:
    random = _bytes(_decode(response, "GetRandom"), "random")
    if not random:
        raise NsmError("the NSM returned no random bytes")
    return random


def error_response(code: str) -> bytes:
    return cbor2.dumps({"Error": code})
