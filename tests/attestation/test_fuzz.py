"""Property-based fuzzing: whatever the bytes, the parser and verifier raise only typed errors.

About 6,000 generated inputs in all: random bytes, random CBOR, structured payloads with wrong types
in every field, and random edits of the real AWS document. Any exception other than an
``AttestationError`` (a KeyError, a cbor2 error, a ValueError from certificate parsing) fails the test.
"""

from __future__ import annotations

import cbor2
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import vector

from nitro_llm.attestation import (
    AttestationError,
    SchemaError,
    VerificationPolicy,
    parse_document,
    verify_document,
)
from nitro_llm.attestation.cose import ES384_PROTECTED

REAL = vector("nitro-attestation/veracruz-production.cbor")
REAL_OUTER = cbor2.loads(REAL)
REAL_PAYLOAD = cbor2.loads(REAL_OUTER[2])
REAL_AT = parse_document(REAL).issued_at
ANY = VerificationPolicy(expected_pcrs={}, allow_debug=True)

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

cbor_leaves = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**64), max_value=2**64)
    | st.floats(allow_nan=True)
    | st.text(max_size=20)
    | st.binary(max_size=64)
)
cbor_values = st.recursive(
    cbor_leaves,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | st.integers(-5, 40), children, max_size=4)
        | st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 18, 24, 28, 29, 55799, 9999]), children)
    ),
    max_leaves=12,
)


def _parse_only_typed(data: bytes) -> None:
    try:
        parse_document(data)
    except SchemaError:
        pass


@settings(FAST, max_examples=2000)
@given(st.binary(max_size=600))
def test_random_bytes_raise_only_schema_errors(data):
    _parse_only_typed(data)


@settings(FAST, max_examples=1200)
@given(cbor_values)
def test_random_cbor_raises_only_schema_errors(value):
    try:
        data = cbor2.dumps(value)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError):
        return  # not encodable: nothing to feed the parser
    _parse_only_typed(data)
    _parse_only_typed(cbor2.dumps([ES384_PROTECTED, {}, data, b"\x00" * 96]))


@settings(FAST, max_examples=1200)
@given(
    field=st.sampled_from(sorted(REAL_PAYLOAD)),
    replacement=cbor_values,
    drop=st.booleans(),
)
def test_payload_fields_of_any_type_raise_only_schema_errors_or_parse(field, replacement, drop):
    payload = dict(REAL_PAYLOAD)
    if drop:
        payload.pop(field)
    else:
        payload[field] = replacement
    try:
        encoded = cbor2.dumps(payload)
    except (cbor2.CBOREncodeError, ValueError, TypeError, OverflowError):
        return
    try:
        document = parse_document(cbor2.dumps([ES384_PROTECTED, {}, encoded, REAL_OUTER[3]]))
    except SchemaError:
        return
    # whatever parsed has the promised types, and the changed field holds what was put there
    assert isinstance(document.module_id, str) and all(len(v) == 48 for v in document.pcrs.values())
    assert drop or field in ("public_key", "user_data", "nonce") or getattr(document, field) is not None


edits = st.lists(
    st.tuples(
        st.sampled_from(["flip", "insert", "delete", "truncate"]),
        st.integers(0, len(REAL) - 1),
        st.integers(0, 255),
    ),
    min_size=1,
    max_size=4,
)


def _apply(edit_list: list[tuple[str, int, int]]) -> bytes:
    data = bytearray(REAL)
    for kind, position, value in edit_list:
        if not data and kind != "insert":
            continue
        position %= max(len(data), 1)
        if kind == "flip":
            data[position] ^= value or 1
        elif kind == "insert":
            data.insert(position, value)
        elif kind == "delete":
            del data[position]
        else:
            del data[position:]
    return bytes(data)


@settings(FAST, max_examples=1200)
@given(edits)
def test_edited_real_document_parses_or_raises_schema_error(edit_list):
    _parse_only_typed(_apply(edit_list))


@settings(FAST, max_examples=400)
@given(edits)
def test_edited_real_document_never_verifies_unless_the_signed_bytes_are_intact(edit_list):
    data = _apply(edit_list)
    try:
        report = verify_document(data, at=REAL_AT, policy=ANY)
    except AttestationError:
        return
    # only an edit that leaves protected header, payload and signature byte-identical may pass
    cose = report.document.cose
    assert (cose.protected, cose.payload, cose.signature) == (REAL_OUTER[0], REAL_OUTER[2], REAL_OUTER[3])


def test_deep_nesting_and_huge_inputs_are_schema_errors():
    for data in (b"\x81" * 100_000, b"\xa1\x01" * 50_000, b"\x9f" * 1000, REAL + b"\x00", b"\x00" * 40_000):
        _parse_only_typed(data)
    for prefix in (
        b"\x5b\xff\xff\xff\xff\xff\xff\xff\xff",
        b"\x9b\xff\xff\xff\xff\xff\xff\xff\xff",
    ):  # 2^64 lengths
        _parse_only_typed(prefix)
