"""Client-side verification against the emulated NSM (and one real AWS document): who gets refused."""

import datetime as dt
import hashlib

import pytest
from vectors import vector

from nitro_llm.attestation import (
    DebugModeError,
    NonceMismatchError,
    PcrMismatchError,
    StaleDocumentError,
    UntrustedRootError,
    UserDataMismatchError,
)
from nitro_llm.client.attested_verify import (
    AttestedVerificationError,
    ConfigMismatchError,
    ModelMismatchError,
    SuiteNotAcceptedError,
    VerifiedEnclaveCache,
    new_nonce,
    verify_attestation,
)
from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.protocol.attested import EnclaveSession, seal_request
from nitro_llm.protocol.attested_errors import DescriptorError
from nitro_llm_dev.nsm import open_emulated_nsm

MODEL = hashlib.sha256(b"model").hexdigest()
CONFIG = hashlib.sha256(b"config").hexdigest()
PCRS = {i: hashlib.sha384(f"pcr{i}".encode()).digest() for i in (0, 1, 2)}
REQUEST = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0.0}


def _policy(ca, **over):
    fields = {
        "expected_pcrs": dict(PCRS),
        "trust_root": TrustRoot(pem=ca.root_pem.decode()),
        "unsafe_dev_root": True,
    }
    fields.update(over)
    return ClientPolicy(**fields)


def _attest(nsm, session, nonce):
    return nsm.attest(user_data=session.user_data(), nonce=nonce), session.descriptor_bytes


@pytest.fixture
def nsm(dev_ca):
    with open_emulated_nsm(ca=dev_ca, pcrs=PCRS) as n:
        yield n


@pytest.fixture(params=["x25519", "mlkem768-x25519"])
def session(request):
    return EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite=request.param)


def test_verified_enclave_names_the_key_and_seals_to_it(nsm, dev_ca, session):
    nonce = new_nonce()
    document, descriptor = _attest(nsm, session, nonce)
    verified = verify_attestation(document, descriptor, nonce, _policy(dev_ca))
    assert verified.hpke_public_key == session.descriptor.hpke_public_key
    assert verified.suite == session.suite and verified.model_digest == MODEL
    assert verified.descriptor_hash == session.descriptor_hash
    assert {i: verified.pcrs[i] for i in (0, 1, 2)} == PCRS
    assert verified.leaf_not_after - verified.document_time <= dt.timedelta(hours=3, seconds=5)
    assert verified.valid_at(verified.verified_at)
    assert verified.unsafe and "dev root" in verified.unsafe[0]
    panel = verified.describe()
    assert panel["verified"] is True and panel["pcrs"]["0"] == PCRS[0].hex()
    opened = session.open_request(seal_request(verified.descriptor, REQUEST).envelope.to_cbor())
    assert opened.request.to_dict() == REQUEST


def test_different_pcr0_is_refused(dev_ca, session):
    nonce = new_nonce()
    other = {**PCRS, 0: hashlib.sha384(b"a modified enclave image").digest()}
    with open_emulated_nsm(ca=dev_ca, pcrs=other) as nsm:
        document, descriptor = _attest(nsm, session, nonce)
    with pytest.raises(PcrMismatchError):
        verify_attestation(document, descriptor, nonce, _policy(dev_ca))


def test_debug_mode_is_refused(dev_ca, session):
    nonce = new_nonce()
    with open_emulated_nsm(ca=dev_ca, pcrs=PCRS, debug=True) as nsm:
        document, descriptor = _attest(nsm, session, nonce)
    with pytest.raises((DebugModeError, PcrMismatchError)):
        verify_attestation(document, descriptor, nonce, _policy(dev_ca))


def test_debug_mode_passes_only_when_the_policy_says_so(dev_ca, session):
    nonce = new_nonce()
    with open_emulated_nsm(ca=dev_ca, pcrs=PCRS, debug=True) as nsm:
        document, descriptor = _attest(nsm, session, nonce)
    zero = bytes(48)
    policy = _policy(dev_ca, expected_pcrs={0: zero, 1: zero, 2: zero}, allow_debug=True)
    verified = verify_attestation(document, descriptor, nonce, policy)
    assert any("debug" in reason for reason in verified.unsafe)


def test_another_root_is_refused(other_ca, dev_ca, session):
    nonce = new_nonce()
    with open_emulated_nsm(ca=other_ca, pcrs=PCRS) as nsm:
        document, descriptor = _attest(nsm, session, nonce)
    with pytest.raises(UntrustedRootError):
        verify_attestation(document, descriptor, nonce, _policy(dev_ca))


def test_the_default_aws_root_refuses_dev_documents(nsm, session):
    nonce = new_nonce()
    document, descriptor = _attest(nsm, session, nonce)
    with pytest.raises(UntrustedRootError):
        verify_attestation(document, descriptor, nonce, ClientPolicy(expected_pcrs=dict(PCRS)))


def test_swapped_descriptor_is_refused(nsm, dev_ca, session):
    """The relay attests the real session but hands over a descriptor naming its own key."""
    nonce = new_nonce()
    document, _ = _attest(nsm, session, nonce)
    impostor = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite=session.suite)
    with pytest.raises(UserDataMismatchError):
        verify_attestation(document, impostor.descriptor_bytes, nonce, _policy(dev_ca))


def test_replayed_document_with_old_nonce_is_refused(nsm, dev_ca, session):
    old_nonce = new_nonce()
    document, descriptor = _attest(nsm, session, old_nonce)
    with pytest.raises(NonceMismatchError):
        verify_attestation(document, descriptor, new_nonce(), _policy(dev_ca))


def test_short_nonce_is_refused_before_verifying(nsm, dev_ca, session):
    document, descriptor = _attest(nsm, session, b"1234")
    with pytest.raises(AttestedVerificationError, match="nonce"):
        verify_attestation(document, descriptor, b"1234", _policy(dev_ca))


def test_old_document_is_refused(nsm, dev_ca, session):
    nonce = new_nonce()
    document, descriptor = _attest(nsm, session, nonce)
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=10)
    with pytest.raises(StaleDocumentError):
        verify_attestation(
            document, descriptor, nonce, _policy(dev_ca, max_document_age_seconds=60), at=later
        )


def test_model_config_and_suite_pinned_by_policy(nsm, dev_ca, session):
    nonce = new_nonce()
    document, descriptor = _attest(nsm, session, nonce)
    with pytest.raises(ModelMismatchError):
        verify_attestation(document, descriptor, nonce, _policy(dev_ca, model_digest="1" * 64))
    with pytest.raises(ConfigMismatchError):
        verify_attestation(document, descriptor, nonce, _policy(dev_ca, config_digest="1" * 64))
    other_suite = "x25519" if session.suite != "x25519" else "mlkem768-x25519"
    with pytest.raises(SuiteNotAcceptedError):
        verify_attestation(document, descriptor, nonce, _policy(dev_ca, accepted_suites=(other_suite,)))
    ok = verify_attestation(
        document, descriptor, nonce, _policy(dev_ca, model_digest=MODEL, config_digest=CONFIG)
    )
    assert ok.config_digest == CONFIG


def test_malformed_descriptor_bound_by_a_valid_document_is_refused(nsm, dev_ca):
    """An enclave bug (or a compromised one) attesting garbage: the client still refuses to seal."""
    garbage = b"\xa1\x61x\x01"
    nonce = new_nonce()
    document = nsm.attest(user_data=hashlib.sha256(garbage).digest(), nonce=nonce)
    with pytest.raises(DescriptorError):
        verify_attestation(document, garbage, nonce, _policy(dev_ca))


def test_real_aws_document_passes_every_check_but_the_descriptor_binding():
    """A production AWS document through the default AWS root, at its own timestamp: chain, signature,
    PCRs, nonce all pass; its user_data is not our descriptor's hash, so it is refused there."""
    doc = vector("nitro-attestation/veracruz-production.cbor")
    pcrs = {
        0: "22f9e1c949208da55eb01b9b9fc88f87454f77ba133f0d82320b509621c92482152a99d0a12335b97178c02d6f977d01",
        1: "bcdf05fefccaa8e55bf2c8d6dee9e79bbff31e34bf28a99aa19e6b29c37ee80b214a414b7607236edf26fcb78654e63f",
        2: "00943ea859140fed74e1025fe41aedb38780eae5656b3f9ef9b4b0e6111350315544db3efcda05725108f72b2ab141f7",
    }
    policy = ClientPolicy(expected_pcrs={i: bytes.fromhex(v) for i, v in pcrs.items()})
    nonce = bytes.fromhex("c678c86135de539d183acff58886d98dfb9823041af9f934bf909ac0f8d96245")
    at = dt.datetime(2022, 11, 9, 22, 52, 30, tzinfo=dt.UTC)
    descriptor = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG).descriptor_bytes
    with pytest.raises(UserDataMismatchError) as info:
        verify_attestation(doc, descriptor, nonce, policy, at=at)
    passed = {c.name for c in info.value.report.checks if c.status == "pass"}
    assert {"chain.root", "chain.signatures", "cose.signature", "debug_mode", "pcrs", "nonce"} <= passed
    assert info.value.report.failed.name == "user_data"


def test_cache_until_leaf_expiry_and_forget_on_rotation(nsm, dev_ca):
    now = [dt.datetime.now(dt.UTC)]
    cache = VerifiedEnclaveCache(clock=lambda: now[0])
    verified = []
    for suite in ("x25519", "mlkem768-x25519"):
        session = EnclaveSession.generate(model_digest=MODEL, config_digest=CONFIG, suite=suite)
        nonce = new_nonce()
        document, descriptor = _attest(nsm, session, nonce)
        verified.append(verify_attestation(document, descriptor, nonce, _policy(dev_ca)))
        cache.put(verified[-1])
    classic, hybrid = verified
    assert cache.get(classic.descriptor_hash) is classic
    assert cache.current() is hybrid
    assert cache.current("x25519") is classic
    cache.forget(hybrid.descriptor_hash)
    assert cache.current() is classic and len(cache) == 1
    now[0] = classic.leaf_not_after + dt.timedelta(seconds=1)
    assert cache.get(classic.descriptor_hash) is None
    assert cache.current() is None and len(cache) == 0
