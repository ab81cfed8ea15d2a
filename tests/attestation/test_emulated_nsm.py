"""The emulated NSM: real-format documents that pass the verifier with the dev root and only with it."""

from __future__ import annotations

import datetime as dt

import cbor2
import pytest
from cryptography import x509

from nitro_llm.attestation import (
    DebugModeError,
    NsmError,
    UntrustedRootError,
    VerificationPolicy,
    parse_document,
    verify_document,
)
from nitro_llm.attestation.document import FIELD_ORDER
from nitro_llm.attestation.nsm import messages
from nitro_llm.attestation.pcr import pcr3_for_role_arn, pcr4_for_instance_id
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import LEAF_LIFETIME


def _strict(pcrs, **values) -> VerificationPolicy:
    return VerificationPolicy(expected_pcrs=pcrs, max_age=dt.timedelta(seconds=30), **values)


def test_emulated_documents_pass_with_the_dev_root(emulated, dev_ca, measured_pcrs, role_arn):
    nonce, user_data, public_key = b"n" * 32, b"session-descriptor-hash", b"0\x82der-public-key"
    doc = emulated.attest(user_data=user_data, nonce=nonce, public_key=public_key)
    expected = {**measured_pcrs, 3: pcr3_for_role_arn(role_arn), 4: pcr4_for_instance_id(dev_ca.instance_id)}
    policy = _strict(expected, nonce=nonce, user_data=user_data, public_key=public_key)
    report = verify_document(doc, roots=[dev_ca.root_certificate], policy=policy)
    assert report.ok
    assert not any(c.skipped for c in report.checks)


def test_emulated_documents_fail_with_the_aws_root(emulated, measured_pcrs):
    with pytest.raises(UntrustedRootError):
        verify_document(emulated.attest(), policy=_strict(measured_pcrs))


def test_trusting_the_dev_root_is_logged_as_unsafe(emulated, dev_ca, caplog, monkeypatch):
    from nitro_llm.attestation import trust

    monkeypatch.setattr(trust, "_warned", set())
    with caplog.at_level("WARNING"):
        verify_document(emulated.attest(), roots=[dev_ca.root_certificate], policy=VerificationPolicy({}))
        verify_document(emulated.attest(), roots=[dev_ca.root_certificate], policy=VerificationPolicy({}))
    assert caplog.text.count("UNSAFE: trusting a non-AWS root") == 1


def test_emulated_document_has_the_real_byte_structure(emulated, veracruz):
    ours, real = emulated.attest(nonce=b"x" * 32, user_data=b"y" * 32), veracruz.data
    # untagged COSE_Sign1: array(4), bstr(4) {1: -35}, empty map, then the payload as a 2-byte-length bstr
    assert ours[:8] == real[:8] == bytes.fromhex("8444a1013822a059")
    our_outer, real_outer = cbor2.loads(ours), cbor2.loads(real)
    assert len(our_outer[3]) == len(real_outer[3]) == 96
    assert cbor2.dumps(our_outer) == ours  # no trailing or non-minimal encodings, like the NSM's
    assert cbor2.dumps(real_outer) == real
    our_payload, real_payload = cbor2.loads(our_outer[2]), cbor2.loads(real_outer[2])
    assert list(our_payload) == list(real_payload) == list(FIELD_ORDER)
    assert list(our_payload["pcrs"]) == list(real_payload["pcrs"]) == list(range(16))
    assert {len(v) for v in our_payload["pcrs"].values()} == {48}
    assert len(our_payload["cabundle"]) == len(real_payload["cabundle"]) == 4
    assert our_payload["public_key"] is None and real_payload["public_key"] is None
    for field in FIELD_ORDER:
        assert type(our_payload[field]) is type(real_payload[field]), field
    # the payload's CBOR header bytes line up with the real one up to the first PCR value
    head = len(b"\xa9" + cbor2.dumps("module_id"))
    assert our_outer[2][:head] == real_outer[2][:head]


def _extension_shape(cert: x509.Certificate) -> list[tuple[str, bool]]:
    return sorted((e.oid.dotted_string, e.critical) for e in cert.extensions)


def test_dev_chain_has_the_shape_of_the_aws_chain(emulated, real_doc):
    ours = parse_document(emulated.attest())
    real = parse_document(real_doc("sparsity-debug-mode.cbor").data)  # the 2024 chain: instance has AKI/SKI
    for mine, theirs in zip([*ours.chain, ours.leaf], [*real.chain, real.leaf], strict=True):
        assert _extension_shape(mine) == _extension_shape(theirs)
        mine_bc = mine.extensions.get_extension_for_class(x509.BasicConstraints).value
        theirs_bc = theirs.extensions.get_extension_for_class(x509.BasicConstraints).value
        assert (mine_bc.ca, mine_bc.path_length) == (theirs_bc.ca, theirs_bc.path_length)
        assert mine.extensions.get_extension_for_class(x509.KeyUsage).value == (
            theirs.extensions.get_extension_for_class(x509.KeyUsage).value
        )
        assert mine.signature_algorithm_oid == theirs.signature_algorithm_oid
        assert mine.public_key().curve.name == theirs.public_key().curve.name == "secp384r1"
    leaf = ours.leaf
    assert leaf.not_valid_after_utc - leaf.not_valid_before_utc == LEAF_LIFETIME + dt.timedelta(seconds=3)
    assert ours.leaf.not_valid_before_utc <= ours.issued_at < ours.leaf.not_valid_after_utc
    assert "dev" in ours.chain[0].subject.rfc4514_string()  # never mistaken for AWS's


def test_module_id_and_leaf_serial_have_the_real_shape(emulated, dev_ca, veracruz):
    doc = parse_document(emulated.attest())
    instance, _, enclave = doc.module_id.partition("-enc")
    assert instance == dev_ca.instance_id and len(instance) == 19 and instance.startswith("i-")
    assert len(enclave) == 16 and int(enclave, 16) >= 0
    real = parse_document(veracruz.data)
    for d in (doc, real):  # enclave id (8 bytes) || 4 zero bytes || issue time in seconds (4 bytes)
        serial = d.leaf.serial_number.to_bytes(16, "big")
        assert serial[:8].hex() == d.module_id.rpartition("-enc")[2]
        assert serial[8:12] == bytes(4)
        assert abs(int.from_bytes(serial[12:], "big") - d.timestamp // 1000) <= 15


def test_each_document_gets_its_own_short_lived_leaf(emulated):
    first, second = parse_document(emulated.attest()), parse_document(emulated.attest())
    assert first.leaf.public_key() != second.leaf.public_key()
    assert first.cabundle == second.cabundle


def test_debug_mode_gives_zero_pcr0_2_and_fails_unless_allowed(dev_ca, measured_pcrs):
    nsm = open_emulated_nsm(ca=dev_ca, pcrs=measured_pcrs, debug=True)
    doc = nsm.attest()
    parsed = parse_document(doc)
    assert parsed.is_debug and parsed.pcrs[4] == pcr4_for_instance_id(dev_ca.instance_id)
    with pytest.raises(DebugModeError):
        verify_document(doc, roots=[dev_ca.root_certificate], policy=VerificationPolicy({}))
    assert verify_document(
        doc, roots=[dev_ca.root_certificate], policy=VerificationPolicy({}, allow_debug=True)
    ).ok


def test_describe_calls_answer_like_the_device(emulated, measured_pcrs):
    description = emulated.describe()
    assert description.digest == "SHA384" and description.max_pcrs == 32
    assert description.locked_pcrs == list(range(16))
    assert description.module_id == parse_document(emulated.attest()).module_id
    pcr0 = emulated.describe_pcr(0)
    assert pcr0.lock and pcr0.data == measured_pcrs[0]
    assert emulated.describe_pcr(20) == messages.PcrDescription(lock=False, data=bytes(48))
    with pytest.raises(NsmError, match="InvalidIndex"):
        emulated.describe_pcr(40)
    random = {emulated.get_random() for _ in range(3)}
    assert len(random) == 3 and {len(r) for r in random} == {256}
    assert emulated.kind == "emulated"


def test_emulated_nsm_refuses_what_the_device_refuses(emulated):
    with pytest.raises(NsmError, match="at most 1024"):
        emulated.attest(user_data=b"x" * 1025)
    transport = emulated._transport
    assert cbor2.loads(transport.exchange(cbor2.dumps({"LockPCR": {"index": 1}}))) == {
        "Error": "InvalidOperation"
    }
    assert cbor2.loads(transport.exchange(b"\xff\x00")) == {"Error": "InvalidArgument"}
    big = cbor2.dumps({"Attestation": {"user_data": b"x" * 1025, "nonce": None, "public_key": None}})
    assert cbor2.loads(transport.exchange(big)) == {"Error": "InputTooLarge"}
    emulated.close()
    with pytest.raises(NsmError, match="closed"):
        emulated.attest()


def test_emulated_nsm_needs_a_model_or_pcrs(dev_ca):
    with pytest.raises(NsmError, match="model"):
        open_emulated_nsm(ca=dev_ca)


def test_timestamps_follow_the_injected_clock(dev_ca, measured_pcrs):
    when = dt.datetime(2030, 1, 2, 3, 4, 5, 678000, tzinfo=dt.UTC)
    nsm = open_emulated_nsm(ca=dev_ca, pcrs=measured_pcrs, clock=lambda: when)
    doc = nsm.attest()
    assert parse_document(doc).issued_at == when
    policy = VerificationPolicy({}, max_age=dt.timedelta(minutes=1))
    assert verify_document(doc, roots=[dev_ca.root_certificate], at=when, policy=policy).ok
