"""The verifier against real AWS-signed documents (../shared/test-vectors/nitro-attestation)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json

import cbor2
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from rich.console import Console
from vectors import vector

from nitro_llm.attestation import (
    AttestationError,
    DebugModeError,
    ExpiredError,
    SignatureError,
    VerificationPolicy,
    aws_nitro_root,
    document_time,
    parse_document,
    verify_document,
)
from nitro_llm.attestation.pcr import pcr4_for_instance_id

ALL_CHECKS = [
    "schema",
    "chain.order",
    "chain.root",
    "chain.validity",
    "chain.signatures",
    "cose.signature",
    "debug_mode",
    "pcrs",
    "nonce",
    "user_data",
    "public_key",
    "freshness",
]


def _policy_from_sources(doc, **overrides) -> VerificationPolicy:
    values = dict(
        expected_pcrs=doc.pcrs,
        allow_debug=doc.debug,
        nonce=doc.nonce,
        user_data=doc.user_data,
        public_key=doc.public_key,
        max_age=dt.timedelta(minutes=5),
    )
    values.update(overrides)
    return VerificationPolicy(**values)


def test_each_document_verifies_at_its_own_timestamp_with_the_listed_values(each_real_doc):
    doc = each_real_doc
    assert document_time(doc.data) == doc.issued_at
    report = verify_document(doc.data, at=doc.issued_at, policy=_policy_from_sources(doc))
    assert report.ok
    assert [c.name for c in report.checks] == ALL_CHECKS
    parsed = report.document
    assert parsed.pcrs[0] == doc.pcrs[0] and parsed.pcrs[1] == doc.pcrs[1] and parsed.pcrs[2] == doc.pcrs[2]
    assert parsed.user_data == doc.user_data
    assert parsed.nonce == doc.nonce
    assert parsed.is_debug is doc.debug
    skipped = {c.name for c in report.checks if c.skipped}
    assert skipped == {name for name in ("nonce", "public_key") if getattr(doc, name) is None}


def test_each_document_fails_as_expired_today(each_real_doc):
    policy = VerificationPolicy(expected_pcrs={}, allow_debug=True)
    with pytest.raises(ExpiredError) as caught:
        verify_document(each_real_doc.data, policy=policy)
    assert caught.value.check == "chain.validity"
    assert "expired" in caught.value.message
    failed = caught.value.report.failed
    assert failed is not None and failed.name == "chain.validity"


def test_expired_also_with_an_explicit_later_time(veracruz):
    later = veracruz.issued_at + dt.timedelta(hours=3, minutes=1)
    with pytest.raises(ExpiredError):
        verify_document(veracruz.data, at=later, policy=VerificationPolicy({}))
    # and just inside the leaf's 3 hours it is still valid
    verify_document(
        veracruz.data,
        at=veracruz.issued_at + dt.timedelta(hours=2, minutes=59),
        policy=VerificationPolicy({}),
    )


def test_not_yet_valid_before_the_leaf_was_issued(veracruz):
    with pytest.raises(ExpiredError, match="not valid before"):
        verify_document(
            veracruz.data, at=veracruz.issued_at - dt.timedelta(minutes=1), policy=VerificationPolicy({})
        )


def test_bad_signature_copy_is_rejected(veracruz):
    bad = vector("nitro-attestation/veracruz-production-bad-signature.cbor")
    assert bad != veracruz.data and len(bad) == len(veracruz.data)
    with pytest.raises(SignatureError) as caught:
        verify_document(bad, at=veracruz.issued_at, policy=_policy_from_sources(veracruz))
    checks = caught.value.report.checks
    assert [c.name for c in checks][-1] == "cose.signature"
    assert all(c.passed for c in checks[:-1])  # the chain is fine; only the signature is not


@pytest.mark.parametrize("name", ["sparsity-debug-mode.cbor", "evervault-debug-mode.cbor"])
def test_debug_mode_documents_fail_unless_debug_is_allowed(real_doc, name, caplog):
    doc = real_doc(name)
    with pytest.raises(DebugModeError):
        verify_document(doc.data, at=doc.issued_at, policy=VerificationPolicy({}))
    with caplog.at_level("WARNING"):
        report = verify_document(doc.data, at=doc.issued_at, policy=VerificationPolicy({}, allow_debug=True))
    assert report.ok
    assert "UNSAFE: accepting a debug-mode enclave" in caplog.text
    assert next(c for c in report.checks if c.name == "debug_mode").detail.startswith("UNSAFE")


def test_debug_public_key_field_holds_text_not_a_key(real_doc):
    doc = parse_document(real_doc("sparsity-debug-mode.cbor").data)
    assert doc.public_key.startswith(b"PublicKey(")


def test_pcr4_of_every_real_document_is_its_instance_id_extended(each_real_doc):
    doc = parse_document(each_real_doc.data)
    instance_id = doc.module_id.split("-enc")[0]
    assert doc.pcrs[4] == pcr4_for_instance_id(instance_id)


def test_packaged_root_is_the_pinned_aws_root_and_the_documents_root(each_real_doc):
    root = aws_nitro_root()
    der = root.public_bytes(serialization.Encoding.DER)
    assert (
        hashlib.sha256(der).hexdigest() == "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    )
    assert x509.load_pem_x509_certificate(vector("nitro-attestation/aws-nitro-root-g1.pem")) == root
    assert parse_document(each_real_doc.data).cabundle[0] == der


def test_tagged_cose_sign1_verifies_like_the_untagged_form(veracruz):
    tagged = cbor2.dumps(cbor2.CBORTag(18, cbor2.loads(veracruz.data)))
    report = verify_document(tagged, at=veracruz.issued_at, policy=_policy_from_sources(veracruz))
    assert report.document.cose.tagged


def test_naive_time_is_read_as_utc(veracruz):
    naive = veracruz.issued_at.replace(tzinfo=None)
    assert verify_document(veracruz.data, at=naive, policy=VerificationPolicy({})).ok


def test_report_renders_as_json_and_as_a_table(veracruz):
    report = verify_document(veracruz.data, at=veracruz.issued_at, policy=_policy_from_sources(veracruz))
    data = json.loads(report.to_json_text())
    assert data["ok"] is True
    assert [c["name"] for c in data["checks"]] == ALL_CHECKS
    assert data["document"]["pcrs"]["0"] == veracruz.pcrs[0].hex()
    assert data["document"]["nonce"] == veracruz.nonce.hex()
    assert data["trusted_roots_sha256"] == [
        "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"
    ]
    console = Console(record=True, width=200)
    console.print(report.to_table())
    text = console.export_text()
    assert "VERIFIED" in text
    for name in ALL_CHECKS:
        assert name in text


def test_failure_report_lists_checks_up_to_the_failing_one(veracruz):
    with pytest.raises(AttestationError) as caught:
        verify_document(veracruz.data, policy=VerificationPolicy({}))
    report = caught.value.report
    assert not report.ok
    assert [c.status for c in report.checks] == ["pass", "pass", "pass", "fail"]
    assert json.loads(report.to_json_text())["checks"][-1]["passed"] is False
