"""The generated key policy, evaluated: who may do what with the data owner's key."""

from __future__ import annotations

import json

import pytest

from nitro_llm.kms.errors import PolicyError
from nitro_llm.kms.key_policy import ADMIN_ACTIONS, EnclaveMeasurements, build_key_policy
from nitro_llm.kms.policy_eval import Caller, Request, parse_policy

ACCT = "123456789012"
ADMIN = Caller(f"arn:aws:iam::{ACCT}:user/admin", ACCT)
CLIENT = Caller(f"arn:aws:iam::{ACCT}:user/client", ACCT)
ROLE = f"arn:aws:iam::{ACCT}:role/enclave"
ENCLAVE = Caller(f"arn:aws:sts::{ACCT}:assumed-role/enclave/i-1", ACCT, role_arn=ROLE)
KEY = f"arn:aws:kms:us-east-1:{ACCT}:key/5d1f2f8e-0000-4000-8000-000000000001"
PCRS = {0: "a0" * 48, 1: "b1" * 48, 2: "c2" * 48}


def attested(pcrs: dict[int, str]) -> dict[str, str]:
    ctx = {f"kms:RecipientAttestation:PCR{i}": v for i, v in pcrs.items()}
    if 0 in pcrs:
        ctx["kms:RecipientAttestation:ImageSha384"] = pcrs[0]
    return ctx


@pytest.fixture(scope="module")
def pol():
    doc = build_key_policy(ACCT, ADMIN.arn, [CLIENT.arn], ROLE, PCRS)
    return parse_policy(json.dumps(doc))  # what KMS would receive


def can(pol, caller, action, context=None) -> bool:
    return pol.evaluate(Request(caller, action, KEY, context or {})).allowed


@pytest.mark.parametrize("action", ["kms:Encrypt", "kms:Decrypt", "kms:GenerateDataKey", "kms:ReEncryptFrom"])
def test_admin_cannot_use_the_key(pol, action):
    assert not can(pol, ADMIN, action)


@pytest.mark.parametrize("action", ADMIN_ACTIONS)
def test_admin_manages_the_key(pol, action):
    assert can(pol, ADMIN, action)


def test_admin_cannot_create_grants(pol):
    assert not can(pol, ADMIN, "kms:CreateGrant")


@pytest.mark.parametrize("action", ["kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt", "kms:DescribeKey"])
def test_client_uses_the_key(pol, action):
    assert can(pol, CLIENT, action)


@pytest.mark.parametrize("action", ["kms:PutKeyPolicy", "kms:DisableKey", "kms:ScheduleKeyDeletion"])
def test_client_cannot_manage_the_key(pol, action):
    assert not can(pol, CLIENT, action)


def test_enclave_decrypts_with_the_measured_pcrs(pol):
    assert can(pol, ENCLAVE, "kms:Decrypt", attested(PCRS))


def test_pcr_match_ignores_hex_case(pol):
    assert can(pol, ENCLAVE, "kms:Decrypt", attested({i: v.upper() for i, v in PCRS.items()}))


def test_enclave_without_attestation_hits_the_explicit_deny(pol):
    decision = pol.evaluate(Request(ENCLAVE, "kms:Decrypt", KEY, {}))
    assert not decision.allowed and decision.explicit_deny
    assert decision.statements == ("DenyEnclaveRoleWithoutAttestation",)


@pytest.mark.parametrize("changed", [0, 1, 2])
def test_enclave_with_any_other_pcr_is_denied(pol, changed):
    pcrs = dict(PCRS)
    pcrs[changed] = "ee" * 48
    assert not can(pol, ENCLAVE, "kms:Decrypt", attested(pcrs))


def test_debug_mode_document_is_denied(pol):
    assert not can(pol, ENCLAVE, "kms:Decrypt", attested({0: "00" * 48, 1: "00" * 48, 2: "00" * 48}))


def test_enclave_may_not_generate_or_encrypt_even_attested(pol):
    assert not can(pol, ENCLAVE, "kms:GenerateDataKey", attested(PCRS))
    assert not can(pol, ENCLAVE, "kms:Encrypt", attested(PCRS))


def test_missing_pcr_in_document_is_denied(pol):
    assert not can(pol, ENCLAVE, "kms:Decrypt", attested({0: PCRS[0], 1: PCRS[1]}))


def test_image_sha384_and_other_pcrs():
    doc = build_key_policy(
        ACCT,
        ADMIN.arn,
        [CLIENT.arn, "arn:aws:iam::123456789012:user/c2"],
        ROLE,
        {8: "d8" * 48},
        image_sha384="A0" * 48,
    )
    cond = doc["Statement"][2]["Condition"]["StringEqualsIgnoreCase"]
    assert cond == {
        "kms:RecipientAttestation:PCR8": "d8" * 48,
        "kms:RecipientAttestation:ImageSha384": "a0" * 48,
    }
    assert doc["Statement"][1]["Principal"]["AWS"] == [CLIENT.arn, "arn:aws:iam::123456789012:user/c2"]
    pol = parse_policy(doc)
    assert can(
        pol, ENCLAVE, "kms:Decrypt", {**attested({0: "a0" * 48}), "kms:RecipientAttestation:PCR8": "d8" * 48}
    )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"pcrs": {}}, "at least one measurement"),
        ({"pcrs": {9: "a0" * 48}}, "PCR0 to PCR8"),
        ({"pcrs": {0: "abc"}}, "96 hex digits"),
        ({"pcrs": {0: "zz" * 48}}, "96 hex digits"),
        ({"pcrs": {0: "00" * 48}}, "debug-mode"),
        ({"image_sha384": "12"}, "96 hex digits"),
        ({"account": "12"}, "12-digit"),
        ({"client_arns": []}, "client principal"),
    ],
)
def test_refuses_bad_inputs(kwargs, message):
    args = {
        "account": ACCT,
        "admin_arn": ADMIN.arn,
        "client_arns": [CLIENT.arn],
        "enclave_role_arn": ROLE,
        "pcrs": PCRS,
        **kwargs,
    }
    with pytest.raises(PolicyError, match=message):
        build_key_policy(**args)


def test_debug_pcrs_only_when_named_unsafe():
    doc = build_key_policy(ACCT, ADMIN.arn, [CLIENT.arn], ROLE, {0: "00" * 48}, unsafe_allow_debug_pcrs=True)
    assert can(parse_policy(doc), ENCLAVE, "kms:Decrypt", attested({0: "00" * 48}))


# -- a rolling update: the old and the new image both decrypt, a mix of the two does not ----------

NEW = {0: "d0" * 48, 1: PCRS[1], 2: "f2" * 48}  # a new build: same kernel (PCR1), new image and app


@pytest.fixture(scope="module")
def rollout():
    doc = build_key_policy(ACCT, ADMIN.arn, [CLIENT.arn], ROLE, PCRS, also_accept=[EnclaveMeasurements(NEW)])
    return doc, parse_policy(json.dumps(doc))


def test_rollout_accepts_the_old_and_the_new_image(rollout):
    _, pol = rollout
    assert can(pol, ENCLAVE, "kms:Decrypt", attested(PCRS))
    assert can(pol, ENCLAVE, "kms:Decrypt", attested(NEW))


@pytest.mark.parametrize(
    "mix",
    [{0: PCRS[0], 1: PCRS[1], 2: NEW[2]}, {0: NEW[0], 1: PCRS[1], 2: PCRS[2]}],
    ids=["old-image-new-app", "new-image-old-app"],
)
def test_rollout_refuses_a_mix_of_the_two_images(rollout, mix):
    assert not can(rollout[1], ENCLAVE, "kms:Decrypt", attested(mix))


def test_rollout_keeps_one_statement_per_image_and_the_deny(rollout):
    doc, pol = rollout
    enclave = [s for s in doc["Statement"] if s["Principal"] == {"AWS": ROLE}]
    allows = [s["Condition"]["StringEqualsIgnoreCase"] for s in enclave if s["Effect"] == "Allow"]
    assert allows == [{f"kms:RecipientAttestation:PCR{i}": v for i, v in p.items()} for p in (PCRS, NEW)]
    assert len({s["Sid"] for s in doc["Statement"]}) == len(doc["Statement"])  # Sids stay unique
    decision = pol.evaluate(Request(ENCLAVE, "kms:Decrypt", KEY, {}))
    assert decision.explicit_deny  # no attestation: still the explicit Deny, whatever the Allows
    assert not can(pol, ENCLAVE, "kms:Decrypt", attested({0: "ee" * 48, 1: "ee" * 48, 2: "ee" * 48}))


def test_narrowed_to_the_new_image_the_old_one_is_refused():
    pol = parse_policy(json.dumps(build_key_policy(ACCT, ADMIN.arn, [CLIENT.arn], ROLE, NEW)))
    assert can(pol, ENCLAVE, "kms:Decrypt", attested(NEW))
    assert not can(pol, ENCLAVE, "kms:Decrypt", attested(PCRS))


def test_rollout_drops_a_repeated_image_and_checks_every_image():
    doc = build_key_policy(
        ACCT, ADMIN.arn, [CLIENT.arn], ROLE, PCRS, also_accept=[EnclaveMeasurements(dict(PCRS))]
    )
    assert [s["Sid"] for s in doc["Statement"]].count("EnclaveDecryptOnlyWithAttestation") == 1
    assert len(doc["Statement"]) == 4
    with pytest.raises(PolicyError, match="debug-mode"):
        build_key_policy(
            ACCT, ADMIN.arn, [CLIENT.arn], ROLE, PCRS, also_accept=[EnclaveMeasurements({0: "00" * 48})]
        )
    with pytest.raises(PolicyError, match="96 hex digits"):
        build_key_policy(
            ACCT, ADMIN.arn, [CLIENT.arn], ROLE, PCRS, also_accept=[EnclaveMeasurements({0: "ab"})]
        )
