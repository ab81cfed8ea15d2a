"""CMS EnvelopedData: AWS's real blob, the SDK's parse-only blobs, our own builder, and hostile input."""

from __future__ import annotations

import pytest
from asn1crypto import cms as asn1_cms
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.serialization import load_der_private_key
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from vectors import vector

from nitro_llm.kms.cms import (
    build_enveloped_data,
    open_enveloped_data,
    parse_enveloped_data,
    subject_key_identifier,
)
from nitro_llm.kms.errors import CmsError

AWS_BLOB = "kms-cms/enclaver-ciphertext-for-recipient.ber"


@pytest.fixture(scope="module")
def enclaver_key() -> rsa.RSAPrivateKey:
    key = load_der_private_key(vector("kms-cms/enclaver-recipient-key.pk8.der"), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key


@pytest.fixture(scope="module")
def other_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_opens_aws_ciphertext_for_recipient(enclaver_key):
    assert open_enveloped_data(vector(AWS_BLOB), enclaver_key) == b"Hello, World"


def test_aws_blob_recipient_is_sha256_of_spki(enclaver_key):
    parsed = parse_enveloped_data(vector(AWS_BLOB))
    assert parsed.version == 2
    assert len(parsed.recipients) == 1
    assert parsed.recipients[0].subject_key_identifier == subject_key_identifier(enclaver_key.public_key())
    assert parsed.recipients[0].oaep_sha256
    assert parsed.content_encryption_algorithm == "aes256_cbc"


@pytest.mark.parametrize(
    ("name", "iv", "content_len"),
    [
        ("kms-cms/sdkc-parse-only.ber", "688c6d5f7f31b0fecedf09f2e7c99ac9", 48),
        # SOURCES.md gives only the first blob's IV; this one's is read from its bytes (openssl asn1parse).
        ("kms-cms/sdkc-parse-only-primitive-content.ber", "e66c1172aee0f2f7be34e3afc6b0e4fe", 16),
    ],
)
def test_parses_sdk_c_blobs(name, iv, content_len):
    parsed = parse_enveloped_data(vector(name))
    assert parsed.version == 2
    (recipient,) = parsed.recipients
    assert len(recipient.encrypted_key) == 256
    assert recipient.key_encryption_algorithm == "rsaes_oaep"
    assert recipient.oaep_sha256
    assert parsed.iv.hex() == iv
    assert len(parsed.encrypted_content) == content_len


def test_sdk_c_blob_is_for_someone_else(enclaver_key):
    with pytest.raises(CmsError, match="no recipient matching"):
        open_enveloped_data(vector("kms-cms/sdkc-parse-only.ber"), enclaver_key)


@pytest.mark.parametrize("plaintext", [b"", b"x", b"0123456789abcdef", bytes(range(256)) * 16])
def test_build_then_open_round_trip(enclaver_key, plaintext):
    blob = build_enveloped_data(plaintext, enclaver_key.public_key())
    assert open_enveloped_data(blob, enclaver_key) == plaintext


def test_build_is_shaped_like_aws(enclaver_key):
    ours = parse_enveloped_data(build_enveloped_data(b"data key", enclaver_key.public_key()))
    theirs = parse_enveloped_data(vector(AWS_BLOB))
    assert ours.version == theirs.version == 2
    assert ours.content_encryption_algorithm == theirs.content_encryption_algorithm
    assert ours.recipients[0].key_encryption_algorithm == theirs.recipients[0].key_encryption_algorithm
    assert ours.recipients[0].oaep_sha256 and theirs.recipients[0].oaep_sha256
    assert ours.recipients[0].subject_key_identifier == theirs.recipients[0].subject_key_identifier
    assert len(ours.recipients[0].encrypted_key) == 256
    assert len(ours.iv) == 16
    # The OAEP parameters are encoded exactly as AWS encodes them (explicit SHA-256 with NULL params).
    ours_alg = asn1_cms.ContentInfo.load(build_enveloped_data(b"k", enclaver_key.public_key()))
    theirs_alg = asn1_cms.ContentInfo.load(vector(AWS_BLOB))
    pick = lambda info: info["content"]["recipient_infos"][0].chosen["key_encryption_algorithm"].dump()  # noqa: E731
    assert pick(ours_alg) == pick(theirs_alg)


def test_fresh_key_and_iv_every_time(enclaver_key):
    a = parse_enveloped_data(build_enveloped_data(b"same", enclaver_key.public_key()))
    b = parse_enveloped_data(build_enveloped_data(b"same", enclaver_key.public_key()))
    assert a.iv != b.iv
    assert a.encrypted_content != b.encrypted_content


def test_wrong_key_is_refused(other_key):
    with pytest.raises(CmsError):
        open_enveloped_data(vector(AWS_BLOB), other_key)


def test_recipient_with_matching_ski_but_wrong_private_key(enclaver_key, other_key):
    """Forge the rid so the lookup matches: decryption itself must still fail, as CmsError."""
    info = asn1_cms.ContentInfo.load(build_enveloped_data(b"secret", enclaver_key.public_key()))
    ktri = info["content"]["recipient_infos"][0].chosen
    ktri["rid"] = asn1_cms.RecipientIdentifier(
        name="subject_key_identifier", value=subject_key_identifier(other_key.public_key())
    )
    with pytest.raises(CmsError, match="could not be decrypted"):
        open_enveloped_data(info.dump(force=True), other_key)


def test_non_rsa_key_is_refused():
    with pytest.raises(CmsError):
        open_enveloped_data(vector(AWS_BLOB), ec.generate_private_key(ec.SECP384R1()))  # type: ignore[arg-type]


def test_builder_refuses_small_or_non_rsa_keys():
    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(CmsError):
        build_enveloped_data(b"x", small.public_key())
    with pytest.raises(CmsError):
        build_enveloped_data(b"x", ec.generate_private_key(ec.SECP384R1()).public_key())  # type: ignore[arg-type]


def test_unsupported_key_encryption_parameters_are_refused(enclaver_key):
    info = asn1_cms.ContentInfo.load(build_enveloped_data(b"secret", enclaver_key.public_key()))
    ktri = info["content"]["recipient_infos"][0].chosen
    sha1 = {"algorithm": "sha1"}
    ktri["key_encryption_algorithm"] = {
        "algorithm": "rsaes_oaep",
        "parameters": {
            "hash_algorithm": sha1,
            "mask_gen_algorithm": {"algorithm": "mgf1", "parameters": sha1},
        },
    }
    with pytest.raises(CmsError, match="algorithm other than"):
        open_enveloped_data(info.dump(force=True), enclaver_key)


def test_other_content_type_is_refused(enclaver_key):
    signed = asn1_cms.ContentInfo({"content_type": "data", "content": b"plain"}).dump()
    with pytest.raises(CmsError, match="malformed"):
        open_enveloped_data(signed, enclaver_key)


def test_issuer_and_serial_recipient_needs_the_certificate_identity(enclaver_key):
    info = asn1_cms.ContentInfo.load(build_enveloped_data(b"by issuer", enclaver_key.public_key()))
    issuer = asn1_cms.Name.build({"common_name": "test recipient"})
    ktri = info["content"]["recipient_infos"][0].chosen
    ktri["version"] = "v0"
    ktri["rid"] = asn1_cms.RecipientIdentifier(
        name="issuer_and_serial_number",
        value=asn1_cms.IssuerAndSerialNumber({"issuer": issuer, "serial_number": 4242}),
    )
    blob = info.dump(force=True)
    with pytest.raises(CmsError, match="no recipient"):
        open_enveloped_data(blob, enclaver_key)
    assert (
        open_enveloped_data(blob, enclaver_key, certificate_issuer_serial=(issuer.dump(), 4242))
        == b"by issuer"
    )
    with pytest.raises(CmsError, match="no recipient"):
        open_enveloped_data(blob, enclaver_key, certificate_issuer_serial=(issuer.dump(), 4243))


@pytest.mark.parametrize("cut", [0, 1, 2, 15, 100, 300, 400, 440, 455, 459, 460])
def test_truncations_are_cms_errors(enclaver_key, cut):
    with pytest.raises(CmsError):
        open_enveloped_data(vector(AWS_BLOB)[:cut], enclaver_key)


def test_trailing_bytes_are_refused(enclaver_key):
    with pytest.raises(CmsError):
        open_enveloped_data(vector(AWS_BLOB) + b"\x00", enclaver_key)


def test_every_single_bit_flip_fails_or_is_harmless(enclaver_key):
    """Each of the blob's 3,688 bits flipped in turn: a CmsError, never another exception; and never a
    different plaintext (CBC without a MAC could only change it inside the IV/ciphertext, which we check)."""
    blob = vector(AWS_BLOB)
    outcomes = {"error": 0, "same": 0, "other": 0}
    for index in range(len(blob) * 8):
        mutated = bytearray(blob)
        mutated[index // 8] ^= 1 << (index % 8)
        try:
            result = open_enveloped_data(bytes(mutated), enclaver_key)
        except CmsError:
            outcomes["error"] += 1
            continue
        outcomes["same" if result == b"Hello, World" else "other"] += 1
    assert outcomes["error"] > len(blob) * 8 * 0.8
    # CMS has no integrity: flips in the IV change the first block and still unpad. That is AWS's format
    # (the enclave authenticates the data key's use through AES-GCM afterwards), so we only bound it.
    assert outcomes["other"] <= 16 * 8


def test_wrong_input_type():
    with pytest.raises(CmsError):
        parse_enveloped_data("not bytes")  # type: ignore[arg-type]


def test_oversized_input():
    with pytest.raises(CmsError):
        parse_enveloped_data(b"\x30" * (2 << 20))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_fuzz_random_bytes_only_raise_cms_error(enclaver_key, data):
    try:
        open_enveloped_data(data, enclaver_key)
    except CmsError:
        pass


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.data())
def test_fuzz_mutated_aws_blob_only_raises_cms_error(enclaver_key, data):
    blob = bytearray(vector(AWS_BLOB))
    for _ in range(data.draw(st.integers(1, 8))):
        pos = data.draw(st.integers(0, len(blob) - 1))
        action = data.draw(st.sampled_from(["set", "delete", "insert"]))
        if action == "set":
            blob[pos] = data.draw(st.integers(0, 255))
        elif action == "delete" and len(blob) > 1:
            del blob[pos]
        else:
            blob.insert(pos, data.draw(st.integers(0, 255)))
    try:
        open_enveloped_data(bytes(blob), enclaver_key)
    except CmsError:
        pass
