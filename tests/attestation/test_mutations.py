"""Altered documents fail, each with the error of the check it defeats.

Two kinds of evidence: copies of the real AWS document changed after signing (the signature can no
longer hold, so the test shows which check catches the change first), and dev-CA documents that are
correctly signed but wrong in exactly one respect (so the targeted check alone is what rejects them).
"""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from nitro_llm.attestation import (
    AttestationError,
    ChainError,
    ExpiredError,
    NonceMismatchError,
    PcrMismatchError,
    PublicKeyMismatchError,
    SchemaError,
    SignatureError,
    StaleDocumentError,
    UntrustedRootError,
    UserDataMismatchError,
    VerificationPolicy,
    parse_document,
    verify_document,
)

ANY = VerificationPolicy(expected_pcrs={})


def _split(data: bytes) -> tuple[list, dict]:
    outer = cbor2.loads(data)
    return outer, cbor2.loads(outer[2])


def _with_payload(data: bytes, **changes: object) -> bytes:
    """The document with payload fields replaced, keeping the original (now stale) signature."""
    outer, payload = _split(data)
    payload.update(changes)
    outer[2] = cbor2.dumps(payload)
    return cbor2.dumps(outer)


def _self_signed_like(template: x509.Certificate) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A root with the same subject, validity and extensions as ``template`` but our own key."""
    key = ec.generate_private_key(ec.SECP384R1())
    builder = (
        x509.CertificateBuilder()
        .subject_name(template.subject)
        .issuer_name(template.subject)
        .public_key(key.public_key())
        .serial_number(template.serial_number)
        .not_valid_before(template.not_valid_before_utc)
        .not_valid_after(template.not_valid_after_utc)
    )
    for ext in template.extensions:
        value = ext.value
        if isinstance(value, x509.SubjectKeyIdentifier):
            value = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
        builder = builder.add_extension(value, ext.critical)
    return builder.sign(key, hashes.SHA384()), key


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


# --- flipped bytes in the real document ------------------------------------------------------


def _regions(data: bytes) -> tuple[int, int, list[range], list[range]]:
    """Payload span in the document, the spans of certificates, and of values only the signature guards."""
    _, payload = _split(data)
    raw_payload = cbor2.loads(data)[2]
    start = data.index(raw_payload)
    certs = [
        range(data.index(c), data.index(c) + len(c)) for c in [*payload["cabundle"], payload["certificate"]]
    ]
    guarded = [range(data.index(v), data.index(v) + len(v)) for v in (payload["nonce"], payload["user_data"])]
    for value in payload["pcrs"].values():
        if any(value):
            guarded.append(range(data.index(value), data.index(value) + len(value)))
    return start, start + len(raw_payload), certs, guarded


def test_a_flipped_byte_anywhere_in_the_payload_is_rejected(veracruz):
    data = veracruz.data
    start, end, certs, guarded = _regions(data)
    in_cert = {i for r in certs for i in r}
    in_guarded = {i for r in guarded for i in r}
    # every byte outside certificates; every 5th inside them (their own signatures cover them)
    positions = [i for i in range(start, end) if i not in in_cert or (i - start) % 5 == 0]
    assert len(positions) > 1500
    seen: dict[str, int] = {}
    for i in positions:
        mutated = bytearray(data)
        mutated[i] ^= 0xFF
        with pytest.raises(AttestationError) as caught:
            verify_document(bytes(mutated), at=veracruz.issued_at, policy=ANY)
        error = caught.value
        seen[type(error).__name__] = seen.get(type(error).__name__, 0) + 1
        if i in in_guarded:
            assert isinstance(error, SignatureError), f"byte {i}: {error!r}"
        elif i in in_cert:
            assert isinstance(error, SchemaError | ChainError), f"byte {i}: {error!r}"
        else:
            assert isinstance(error, SchemaError | SignatureError), f"byte {i}: {error!r}"
    assert seen.keys() >= {"SchemaError", "SignatureError", "ChainError"}


def test_a_flipped_signature_byte_is_rejected(veracruz):
    for i in range(len(veracruz.data) - 96, len(veracruz.data)):
        mutated = bytearray(veracruz.data)
        mutated[i] ^= 0x01
        with pytest.raises(SignatureError):
            verify_document(bytes(mutated), at=veracruz.issued_at, policy=ANY)


# --- cabundle: reordered, truncated ---------------------------------------------------------


@pytest.mark.parametrize(
    "order",
    [[1, 0, 2, 3], [0, 2, 1, 3], [0, 1, 3, 2], [3, 2, 1, 0], [0, 3, 1, 2]],
    ids=["root-swapped", "regional-zonal", "zonal-instance", "reversed", "rotated"],
)
def test_reordered_cabundle_fails_as_chain_error(veracruz, forger, dev_ca, order):
    _, payload = _split(veracruz.data)
    real = _with_payload(veracruz.data, cabundle=[payload["cabundle"][i] for i in order])
    with pytest.raises(ChainError, match=r"reordered|truncated"):
        verify_document(real, at=veracruz.issued_at, policy=ANY)
    # the same reordering in a correctly signed document: the order check alone rejects it
    signed = forger.document(cabundle=[dev_ca.cabundle[i] for i in order])
    with pytest.raises(ChainError, match=r"reordered|truncated"):
        verify_document(signed, roots=[dev_ca.root_certificate], policy=ANY)


@pytest.mark.parametrize("drop", [0, 1, 2, 3])
def test_truncated_cabundle_fails_as_chain_error(veracruz, forger, dev_ca, drop):
    _, payload = _split(veracruz.data)
    real = _with_payload(veracruz.data, cabundle=[c for i, c in enumerate(payload["cabundle"]) if i != drop])
    with pytest.raises(ChainError, match="truncated"):
        verify_document(real, at=veracruz.issued_at, policy=ANY)
    signed = forger.document(cabundle=[c for i, c in enumerate(dev_ca.cabundle) if i != drop])
    with pytest.raises(ChainError, match="truncated"):
        verify_document(signed, roots=[dev_ca.root_certificate], policy=ANY)


def test_empty_cabundle_is_a_schema_error(veracruz):
    with pytest.raises(SchemaError, match="cabundle"):
        verify_document(_with_payload(veracruz.data, cabundle=[]), at=veracruz.issued_at, policy=ANY)


# --- substituted roots and forged intermediates -----------------------------------------------


def test_substituted_self_made_root_fails_as_untrusted_root(veracruz):
    _, payload = _split(veracruz.data)
    fake_root, _ = _self_signed_like(x509.load_der_x509_certificate(payload["cabundle"][0]))
    assert fake_root.subject == x509.load_der_x509_certificate(payload["cabundle"][0]).subject
    forged = _with_payload(veracruz.data, cabundle=[_der(fake_root), *payload["cabundle"][1:]])
    with pytest.raises(UntrustedRootError):
        verify_document(forged, at=veracruz.issued_at, policy=ANY)


def test_whole_self_made_chain_named_like_aws_fails_even_when_correctly_signed(veracruz, forger):
    """An attacker mints root -> intermediates -> leaf with AWS's names; only the pinned root stops it."""
    _, payload = _split(veracruz.data)
    templates = [x509.load_der_x509_certificate(c) for c in payload["cabundle"]]
    root, key = _self_signed_like(templates[0])
    chain, issuer_key, issuer = [root], key, root
    for template in templates[1:]:
        own = ec.generate_private_key(ec.SECP384R1())
        builder = (
            x509.CertificateBuilder()
            .subject_name(template.subject)
            .issuer_name(issuer.subject)
            .public_key(own.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(template.not_valid_before_utc)
            .not_valid_after(template.not_valid_after_utc)
            .add_extension(template.extensions.get_extension_for_class(x509.BasicConstraints).value, True)
            .add_extension(template.extensions.get_extension_for_class(x509.KeyUsage).value, True)
        )
        issuer, issuer_key = builder.sign(issuer_key, hashes.SHA384()), own
        chain.append(issuer)
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    leaf_template = x509.load_der_x509_certificate(payload["certificate"])
    leaf = (
        x509.CertificateBuilder()
        .subject_name(leaf_template.subject)
        .issuer_name(issuer.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(leaf_template.not_valid_before_utc)
        .not_valid_after(leaf_template.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), True)
        .sign(issuer_key, hashes.SHA384())
    )
    from nitro_llm.attestation.cose import sign_es384

    forged = sign_es384(
        leaf_key, cbor2.dumps({**payload, "certificate": _der(leaf), "cabundle": [_der(c) for c in chain]})
    )
    with pytest.raises(UntrustedRootError):
        verify_document(forged, at=veracruz.issued_at, policy=ANY)
    # proof that only the root pin stopped it: trusting the attacker's root, everything else passes
    assert verify_document(forged, roots=[root], at=veracruz.issued_at, policy=ANY).ok


def test_forged_intermediate_under_the_pinned_root_fails_path_validation(veracruz):
    _, payload = _split(veracruz.data)
    regional = x509.load_der_x509_certificate(payload["cabundle"][1])
    impostor_key = ec.generate_private_key(ec.SECP384R1())
    impostor = (
        x509.CertificateBuilder()
        .subject_name(regional.subject)
        .issuer_name(regional.issuer)  # claims AWS's root issued it, but we sign it ourselves
        .public_key(regional.public_key())
        .serial_number(regional.serial_number)
        .not_valid_before(regional.not_valid_before_utc)
        .not_valid_after(regional.not_valid_after_utc)
        .add_extension(x509.BasicConstraints(ca=True, path_length=2), True)
        .add_extension(regional.extensions.get_extension_for_class(x509.KeyUsage).value, True)
        .sign(impostor_key, hashes.SHA384())
    )
    cabundle = list(payload["cabundle"])
    cabundle[1] = _der(impostor)
    with pytest.raises(ChainError, match="path validation"):
        verify_document(_with_payload(veracruz.data, cabundle=cabundle), at=veracruz.issued_at, policy=ANY)


def test_emulated_root_is_not_accepted_by_a_verifier_pinned_to_another_dev_root(forger, tmp_path):
    from nitro_llm_dev.nsm.devca import DevCA

    other = DevCA.load_or_create(tmp_path / "other-ca")
    with pytest.raises(UntrustedRootError):
        verify_document(forger.document(), roots=[other.root_certificate], policy=ANY)


# --- policy expectations ----------------------------------------------------------------------


def test_wrong_pcr_expectation_fails(veracruz):
    for index in (0, 1, 2, 4):
        wrong = bytearray(parse_document(veracruz.data).pcrs[index])
        wrong[-1] ^= 1
        with pytest.raises(PcrMismatchError, match=f"PCR{index} "):
            verify_document(
                veracruz.data, at=veracruz.issued_at, policy=VerificationPolicy({index: bytes(wrong)})
            )


def test_expected_pcr_absent_from_the_document_fails(veracruz):
    with pytest.raises(PcrMismatchError, match="absent"):
        verify_document(veracruz.data, at=veracruz.issued_at, policy=VerificationPolicy({20: bytes(48)}))


def test_debug_document_cannot_satisfy_a_real_pcr_expectation(real_doc, veracruz):
    debug = real_doc("evervault-debug-mode.cbor")
    policy = VerificationPolicy({0: veracruz.pcrs[0]}, allow_debug=True)
    with pytest.raises(PcrMismatchError):
        verify_document(debug.data, at=debug.issued_at, policy=policy)


def test_wrong_nonce_fails(veracruz):
    with pytest.raises(NonceMismatchError, match="differs"):
        verify_document(
            veracruz.data, at=veracruz.issued_at, policy=VerificationPolicy({}, nonce=b"\x00" * 32)
        )


def test_expected_nonce_but_document_has_none_fails(real_doc):
    doc = real_doc("evervault-debug-mode.cbor")
    policy = VerificationPolicy({}, allow_debug=True, nonce=b"fresh")
    with pytest.raises(NonceMismatchError, match="no nonce"):
        verify_document(doc.data, at=doc.issued_at, policy=policy)


def test_wrong_user_data_and_public_key_fail(veracruz, real_doc):
    with pytest.raises(UserDataMismatchError):
        verify_document(
            veracruz.data, at=veracruz.issued_at, policy=VerificationPolicy({}, user_data=b"other")
        )
    ever = real_doc("evervault-debug-mode.cbor")
    with pytest.raises(PublicKeyMismatchError):
        verify_document(
            ever.data, at=ever.issued_at, policy=VerificationPolicy({}, allow_debug=True, public_key=b"x")
        )


def test_document_older_than_the_maximum_age_fails(veracruz):
    policy = VerificationPolicy({}, max_age=dt.timedelta(minutes=5))
    assert verify_document(veracruz.data, at=veracruz.issued_at + dt.timedelta(minutes=4), policy=policy).ok
    with pytest.raises(StaleDocumentError, match="old"):
        verify_document(veracruz.data, at=veracruz.issued_at + dt.timedelta(minutes=6), policy=policy)


def test_document_dated_in_the_future_fails_freshness(forger, dev_ca):
    now = dt.datetime.now(dt.UTC)
    policy = VerificationPolicy({}, max_age=dt.timedelta(minutes=5))
    roots = [dev_ca.root_certificate]

    def claiming(offset: dt.timedelta) -> bytes:  # correctly signed, timestamp moved by ``offset``
        return forger.document(now, timestamp=int((now + offset).timestamp() * 1000))

    with pytest.raises(StaleDocumentError, match="future"):
        verify_document(claiming(dt.timedelta(minutes=10)), roots=roots, at=now, policy=policy)
    # within the default 60 s allowance for clock skew
    assert verify_document(claiming(dt.timedelta(seconds=30)), roots=roots, at=now, policy=policy).ok


# --- the verified-bundle cache never replaces a per-document check ------------------------------


def _leaf_signed_by_impostor(dev_ca, *, ca: bool = False):
    """A leaf naming the dev instance CA as issuer but signed by another key (or flagged as a CA)."""
    instance = x509.load_der_x509_certificate(dev_ca.cabundle[-1])
    leaf_key = ec.generate_private_key(ec.SECP384R1())
    signer = ec.generate_private_key(ec.SECP384R1())
    now = dt.datetime.now(dt.UTC)
    leaf = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(x509.NameOID.COMMON_NAME, "impostor")]))
        .issuer_name(instance.subject)
        .public_key(leaf_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=1))
        .not_valid_after(now + dt.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), True)
        .sign(signer, hashes.SHA384())
    )
    return leaf, leaf_key


@pytest.mark.parametrize("warm", [True, False], ids=["cached-bundle", "cold"])
def test_impostor_leaf_fails_whether_or_not_the_bundle_was_verified_before(forger, dev_ca, warm):
    from nitro_llm.attestation.checks import verified_bundles

    roots = [dev_ca.root_certificate]
    verified_bundles.clear()
    if warm:
        assert verify_document(forger.document(), roots=roots, policy=ANY).ok  # caches the dev bundle
    leaf, key = _leaf_signed_by_impostor(dev_ca)
    forged = forger.document(certificate=_der(leaf), signing_key=key)
    with pytest.raises(ChainError, match="path validation"):
        verify_document(forged, roots=roots, policy=ANY)


def test_leaf_that_is_a_ca_is_refused(forger, dev_ca):
    leaf, key = _leaf_signed_by_impostor(dev_ca, ca=True)
    with pytest.raises(ChainError, match="is a CA"):
        verify_document(
            forger.document(certificate=_der(leaf), signing_key=key),
            roots=[dev_ca.root_certificate],
            policy=ANY,
        )


def test_cached_bundle_does_not_skip_validity(veracruz):
    assert verify_document(veracruz.data, at=veracruz.issued_at, policy=ANY).ok
    with pytest.raises(ExpiredError):
        verify_document(veracruz.data, policy=ANY)
