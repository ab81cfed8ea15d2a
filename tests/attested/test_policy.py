"""The client policy file: round trips, strict loading, loud danger, clear errors."""

import json
import logging

import pytest

from nitro_llm.client.policy import ClientPolicy, PolicyFileError, TrustRoot

PCR0 = "ab" * 48
PCR1 = "cd" * 48


def _doc(**over):
    doc = {"format": "nitro-llm-policy/1", "trust_root": "aws-nitro", "expected_pcrs": {"0": PCR0, "1": PCR1}}
    doc.update(over)
    return doc


def test_minimal_policy_defaults_are_safe():
    policy = ClientPolicy.from_dict(_doc())
    assert policy.roots() is None  # verify_document's "AWS root"
    assert policy.allow_debug is False and policy.unsafe_dev_root is False
    assert policy.max_document_age_seconds == 300
    assert policy.expected_pcrs == {0: bytes.fromhex(PCR0), 1: bytes.fromhex(PCR1)}
    assert policy.unsafe_reasons() == []
    assert policy.accepted_suites == ("x25519", "mlkem768-x25519")


def test_save_load_round_trip(tmp_path, dev_ca):
    policy = ClientPolicy(
        expected_pcrs={0: bytes.fromhex(PCR0)},
        trust_root=TrustRoot(pem=dev_ca.root_pem.decode()),
        unsafe_dev_root=True,
        model_digest="0" * 64,
        accepted_suites=("mlkem768-x25519",),
        description="local stack",
    )
    path = tmp_path / "policy.json"
    policy.save(path)
    assert oct(path.stat().st_mode & 0o777) == "0o644"
    assert ClientPolicy.load(path) == policy
    assert json.loads(path.read_text())["unsafe_dev_root"] is True


def test_pem_file_is_resolved_beside_the_policy(tmp_path, dev_ca):
    (tmp_path / "root.pem").write_bytes(dev_ca.root_pem)
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_doc(trust_root={"pem_file": "root.pem"}, unsafe_dev_root=True)))
    policy = ClientPolicy.load(path)
    assert policy.roots()[0] == dev_ca.root_certificate
    policy.save(tmp_path / "copy.json")
    assert json.loads((tmp_path / "copy.json").read_text())["trust_root"] == {"pem_file": "root.pem"}


def test_dev_root_without_the_unsafe_flag_is_refused(dev_ca):
    with pytest.raises(PolicyFileError, match="without saying so") as info:
        ClientPolicy.from_dict(_doc(trust_root={"pem": dev_ca.root_pem.decode()}))
    assert "unsafe_dev_root" in info.value.hint


def test_unsafe_choices_are_logged_when_loaded(tmp_path, dev_ca, caplog):
    path = tmp_path / "p.json"
    doc = _doc(trust_root={"pem": dev_ca.root_pem.decode()}, unsafe_dev_root=True, allow_debug=True)
    path.write_text(json.dumps(doc))
    with caplog.at_level(logging.WARNING):
        policy = ClientPolicy.load(path)
    assert len(policy.unsafe_reasons()) == 2
    assert "UNSAFE dev root" in caplog.text and "UNSAFE debug" in caplog.text


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"format": "v2"}, "format"),
        ({"allow_debg": True}, "unknown fields: allow_debg"),
        ({"expected_pcrs": {}}, "expected_pcrs"),
        ({"expected_pcrs": {"1": PCR1}}, "no PCR0"),
        ({"expected_pcrs": {"0": "zz" * 48}}, "hex"),
        ({"expected_pcrs": {"0": PCR0[:-2]}}, "96 hex"),
        ({"expected_pcrs": {"40": PCR0, "0": PCR0}}, "PCR index"),
        ({"expected_pcrs": {"0": "00" * 48, "1": "00" * 48, "2": "00" * 48}}, "debug-mode"),
        ({"unsafe_dev_root": True}, "trust root is AWS"),
        ({"trust_root": "my-root"}, "trust_root must be"),
        ({"trust_root": {"pem": "not a pem"}, "unsafe_dev_root": True}, "not a PEM"),
        ({"trust_root": {"pem_file": "/nonexistent/root.pem"}, "unsafe_dev_root": True}, "cannot read"),
        ({"allow_debug": "yes"}, "true or false"),
        ({"max_document_age_seconds": 0}, "max_document_age_seconds"),
        ({"max_document_age_seconds": 10**9}, "max_document_age_seconds"),
        ({"model_digest": "ABC"}, "model_digest"),
        ({"accepted_suites": ["p256"]}, "accepted_suites"),
        ({"accepted_suites": []}, "accepted_suites"),
    ],
)
def test_bad_policies_are_refused_with_a_reason(over, message):
    with pytest.raises(PolicyFileError, match=message):
        ClientPolicy.from_dict(_doc(**over))


def test_unreadable_files(tmp_path):
    with pytest.raises(PolicyFileError, match="cannot read"):
        ClientPolicy.load(tmp_path / "missing.json")
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(PolicyFileError, match="not JSON"):
        ClientPolicy.load(tmp_path / "bad.json")
    (tmp_path / "list.json").write_text("[]")
    with pytest.raises(PolicyFileError, match="JSON object"):
        ClientPolicy.load(tmp_path / "list.json")


def test_verification_policy_carries_nonce_binding_and_age():
    policy = ClientPolicy.from_dict(_doc(max_document_age_seconds=60, allow_debug=False))
    vp = policy.verification_policy(nonce=b"n" * 32, user_data=b"u" * 32)
    assert vp.nonce == b"n" * 32 and vp.user_data == b"u" * 32
    assert vp.max_age.total_seconds() == 60 and vp.allow_debug is False
    assert vp.expected_pcrs == policy.expected_pcrs
