"""The key policy evaluator: AWS's decision rules, condition operators, and what it refuses to parse."""

from __future__ import annotations

import json

import pytest

from nitro_llm.kms.errors import PolicyError
from nitro_llm.kms.policy_eval import Caller, Request, parse_policy

ACCT = "111122223333"
KEY = f"arn:aws:kms:us-east-1:{ACCT}:key/0b7c1f5e-6f0e-4a43-9a3c-2f9d7d1f0a11"
ALICE = Caller(arn=f"arn:aws:iam::{ACCT}:user/alice", account=ACCT)
BOB = Caller(arn=f"arn:aws:iam::{ACCT}:user/bob", account=ACCT)
ROLE = f"arn:aws:iam::{ACCT}:role/enclave"
SESSION = Caller(arn=f"arn:aws:sts::{ACCT}:assumed-role/enclave/i-0123", account=ACCT, role_arn=ROLE)
STRANGER = Caller(arn="arn:aws:iam::999988887777:user/mallory", account="999988887777")


def policy(*statements: dict) -> object:
    return parse_policy({"Version": "2012-10-17", "Statement": list(statements)})


def allow(principal: object = None, action: object = "kms:*", **extra: object) -> dict:
    stmt = {
        "Effect": "Allow",
        "Principal": principal or {"AWS": ALICE.arn},
        "Action": action,
        "Resource": "*",
    }
    stmt.update(extra)
    return stmt


def deny(principal: object = None, action: object = "kms:*", **extra: object) -> dict:
    return {**allow(principal, action, **extra), "Effect": "Deny"}


def decide(pol, caller=ALICE, action="kms:Decrypt", context=None, resource=KEY):
    return pol.evaluate(Request(caller, action, resource, context or {}))


# ---- the decision rules ------------------------------------------------------------------------


def test_default_deny():
    d = decide(policy(allow(action="kms:Encrypt")), action="kms:Decrypt")
    assert not d.allowed and not d.explicit_deny


def test_allow():
    d = decide(policy(allow(Sid="A")))
    assert d.allowed and d.statements == ("A",)


def test_explicit_deny_wins_over_allow_in_any_order():
    for stmts in ([allow(), deny(Sid="D")], [deny(Sid="D"), allow()]):
        d = decide(policy(*stmts))
        assert not d.allowed and d.explicit_deny and d.statements == ("D",)


def test_deny_for_someone_else_does_not_apply():
    assert decide(policy(allow(), deny({"AWS": BOB.arn}))).allowed


def test_single_statement_object_is_accepted():
    assert decide(parse_policy({"Statement": allow()})).allowed


def test_json_text_and_bytes_are_accepted():
    text = json.dumps({"Version": "2012-10-17", "Statement": [allow()]})
    assert decide(parse_policy(text)).allowed
    assert decide(parse_policy(text.encode())).allowed


# ---- principals --------------------------------------------------------------------------------


def test_user_principal_matches_only_that_user():
    pol = policy(allow({"AWS": ALICE.arn}))
    assert decide(pol, ALICE).allowed
    assert not decide(pol, BOB).allowed


def test_principal_list():
    pol = policy(allow({"AWS": [ALICE.arn, BOB.arn]}))
    assert decide(pol, ALICE).allowed and decide(pol, BOB).allowed
    assert not decide(pol, SESSION).allowed


def test_role_principal_matches_its_assumed_role_sessions():
    assert decide(policy(allow({"AWS": ROLE})), SESSION).allowed


def test_session_arn_principal_matches_that_session_only():
    pol = policy(allow({"AWS": SESSION.arn}))
    assert decide(pol, SESSION).allowed
    other = Caller(arn=f"arn:aws:sts::{ACCT}:assumed-role/enclave/i-9999", account=ACCT, role_arn=ROLE)
    assert not decide(pol, other).allowed


def test_account_root_means_every_principal_of_the_account():
    pol = policy(allow({"AWS": f"arn:aws:iam::{ACCT}:root"}))
    assert decide(pol, ALICE).allowed and decide(pol, SESSION).allowed
    assert not decide(pol, STRANGER).allowed


def test_bare_account_id_is_the_account_root():
    pol = policy(allow({"AWS": ACCT}))
    assert decide(pol, BOB).allowed and not decide(pol, STRANGER).allowed


@pytest.mark.parametrize("principal", ["*", {"AWS": "*"}])
def test_wildcard_principal(principal):
    assert decide(policy(allow(principal)), STRANGER).allowed


def test_service_principals_parse_but_never_match_our_callers():
    pol = policy(allow({"Service": "ec2.amazonaws.com"}))
    assert not decide(pol, ALICE).allowed


def test_role_principal_does_not_match_a_user_of_the_same_name():
    pol = policy(allow({"AWS": f"arn:aws:iam::{ACCT}:role/alice"}))
    assert not decide(pol, ALICE).allowed


# ---- actions and resources ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pattern", "action", "expected"),
    [
        ("kms:*", "kms:Decrypt", True),
        ("*", "kms:Decrypt", True),
        ("kms:Decrypt", "kms:Decrypt", True),
        ("KMS:decrypt", "kms:Decrypt", True),  # action names are case-insensitive
        ("kms:Encrypt", "kms:Decrypt", False),
        ("kms:Generate*", "kms:GenerateDataKey", True),
        ("kms:Generate*", "kms:Decrypt", False),
        ("kms:?ecrypt", "kms:Decrypt", True),
        ("kms:?ecrypt", "kms:ReDecrypt", False),
        ("kms:Decrypt", "kms:DecryptX", False),
        ("s3:*", "kms:Decrypt", False),
    ],
)
def test_action_matching(pattern, action, expected):
    assert decide(policy(allow(action=pattern)), action=action).allowed is expected


def test_action_list_and_not_action():
    pol = policy(allow(action=["kms:Encrypt", "kms:Decrypt"]))
    assert decide(pol, action="kms:Decrypt").allowed
    assert not decide(pol, action="kms:PutKeyPolicy").allowed
    not_pol = policy(
        {"Effect": "Allow", "Principal": {"AWS": ALICE.arn}, "NotAction": "kms:Decrypt", "Resource": "*"}
    )
    assert not decide(not_pol, action="kms:Decrypt").allowed
    assert decide(not_pol, action="kms:Encrypt").allowed


def test_resource_matching():
    assert decide(policy(allow(Resource=KEY))).allowed
    assert decide(policy(allow(Resource=f"arn:aws:kms:*:{ACCT}:key/*"))).allowed
    assert not decide(policy(allow(Resource=f"arn:aws:kms:*:{ACCT}:key/other"))).allowed
    assert not decide(
        policy(allow(Resource=f"arn:aws:kms:*:{ACCT}:KEY/*"))
    ).allowed  # ARNs are case-sensitive
    stmt = {"Effect": "Allow", "Principal": {"AWS": ALICE.arn}, "Action": "kms:*", "NotResource": KEY}
    assert not decide(policy(stmt)).allowed


# ---- conditions --------------------------------------------------------------------------------

PCR0 = "kms:RecipientAttestation:PCR0"
HEX = "ab" * 48


def cond(block: dict) -> object:
    return policy(allow(Condition=block))


def test_string_equals_ignore_case_on_pcrs():
    pol = cond({"StringEqualsIgnoreCase": {PCR0: HEX.upper()}})
    assert decide(pol, context={PCR0: HEX}).allowed
    assert not decide(pol, context={PCR0: "cd" * 48}).allowed


def test_missing_key_is_false_for_positive_operators():
    for op in ("StringEquals", "StringEqualsIgnoreCase", "StringLike", "ArnLike", "ArnEquals", "Bool"):
        value = "true" if op == "Bool" else HEX
        assert not decide(cond({op: {PCR0: value}})).allowed, op


def test_missing_key_is_true_for_negated_operators():
    for op in ("StringNotEquals", "StringNotEqualsIgnoreCase", "StringNotLike", "ArnNotEquals", "ArnNotLike"):
        assert decide(cond({op: {PCR0: HEX}})).allowed, op


def test_if_exists_passes_when_absent_and_checks_when_present():
    pol = cond({"StringEqualsIfExists": {PCR0: HEX}})
    assert decide(pol).allowed
    assert decide(pol, context={PCR0: HEX}).allowed
    assert not decide(pol, context={PCR0: "00" * 48}).allowed


def test_string_equals_is_case_sensitive():
    pol = cond({"StringEquals": {"kms:EncryptionContext:app": "Chat"}})
    assert decide(pol, context={"kms:EncryptionContext:app": "Chat"}).allowed
    assert not decide(pol, context={"kms:EncryptionContext:app": "chat"}).allowed


def test_condition_key_names_are_case_insensitive():
    pol = cond({"StringEquals": {"KMS:encryptioncontext:APP": "chat"}})
    assert decide(pol, context={"kms:EncryptionContext:app": "chat"}).allowed


def test_values_in_a_list_are_ored():
    pol = cond({"StringEquals": {"kms:EncryptionContext:app": ["a", "b"]}})
    assert decide(pol, context={"kms:EncryptionContext:app": "b"}).allowed
    assert not decide(pol, context={"kms:EncryptionContext:app": "c"}).allowed


def test_keys_and_operators_are_anded():
    pol = cond(
        {
            "StringEquals": {"kms:EncryptionContext:app": "chat", "kms:EncryptionContext:env": "prod"},
            "StringEqualsIgnoreCase": {PCR0: HEX},
        }
    )
    full = {"kms:EncryptionContext:app": "chat", "kms:EncryptionContext:env": "prod", PCR0: HEX}
    assert decide(pol, context=full).allowed
    for missing in full:
        partial = {k: v for k, v in full.items() if k != missing}
        assert not decide(pol, context=partial).allowed, missing


def test_string_not_equals_with_value():
    pol = cond({"StringNotEquals": {"kms:EncryptionContext:app": "x"}})
    assert decide(pol, context={"kms:EncryptionContext:app": "y"}).allowed
    assert not decide(pol, context={"kms:EncryptionContext:app": "x"}).allowed


def test_string_like_wildcards():
    pol = cond({"StringLike": {"aws:PrincipalArn": f"arn:aws:iam::{ACCT}:user/a*"}})
    assert decide(pol, ALICE).allowed and not decide(pol, BOB).allowed
    pol = cond({"StringLike": {"kms:EncryptionContext:id": "conv-??"}})
    assert decide(pol, context={"kms:EncryptionContext:id": "conv-42"}).allowed
    assert not decide(pol, context={"kms:EncryptionContext:id": "conv-420"}).allowed


def test_string_not_like():
    pol = cond({"StringNotLike": {"kms:EncryptionContext:id": "tmp-*"}})
    assert decide(pol, context={"kms:EncryptionContext:id": "conv-1"}).allowed
    assert not decide(pol, context={"kms:EncryptionContext:id": "tmp-1"}).allowed


def test_null_operator():
    absent = cond({"Null": {PCR0: "true"}})
    assert decide(absent).allowed and not decide(absent, context={PCR0: HEX}).allowed
    present = cond({"Null": {PCR0: "false"}})
    assert not decide(present).allowed and decide(present, context={PCR0: HEX}).allowed
    assert decide(cond({"Null": {PCR0: True}})).allowed  # JSON booleans are accepted as well


def test_bool_operator():
    pol = cond({"Bool": {"aws:SecureTransport": "true"}})
    assert decide(pol, context={"aws:SecureTransport": "true"}).allowed
    assert decide(pol, context={"aws:SecureTransport": "TRUE"}).allowed
    assert not decide(pol, context={"aws:SecureTransport": "false"}).allowed
    assert not decide(pol).allowed


def test_global_keys_caller_account_and_principal_arn():
    pol = policy(
        allow("*", Condition={"StringEquals": {"kms:CallerAccount": ACCT, "aws:PrincipalArn": ROLE}})
    )
    assert decide(pol, SESSION).allowed  # for a session, aws:PrincipalArn is the role
    assert not decide(pol, ALICE).allowed
    assert not decide(
        policy(allow("*", Condition={"StringEquals": {"kms:CallerAccount": ACCT}})), STRANGER
    ).allowed
    assert decide(cond({"ArnEquals": {"aws:PrincipalArn": ALICE.arn}}), ALICE).allowed


def test_via_service_is_never_present_here():
    assert not decide(cond({"StringEquals": {"kms:ViaService": "ec2.us-east-1.amazonaws.com"}})).allowed
    assert decide(cond({"Null": {"kms:ViaService": "true"}})).allowed


KEYS = "kms:EncryptionContextKeys"


def test_for_any_value():
    pol = cond({"ForAnyValue:StringEquals": {KEYS: ["app", "tenant"]}})
    assert decide(pol, context={KEYS: ["tenant", "other"]}).allowed
    assert not decide(pol, context={KEYS: ["other"]}).allowed
    assert not decide(pol).allowed  # absent key: ForAnyValue is false


def test_for_all_values():
    pol = cond({"ForAllValues:StringEquals": {KEYS: ["app", "tenant"]}})
    assert decide(pol, context={KEYS: ["app"]}).allowed
    assert decide(pol, context={KEYS: ["app", "tenant"]}).allowed
    assert not decide(pol, context={KEYS: ["app", "extra"]}).allowed
    assert decide(pol).allowed  # AWS: an absent key satisfies ForAllValues (pair it with Null to forbid)


def test_for_all_values_negated():
    pol = cond({"ForAllValues:StringNotEquals": {KEYS: ["forbidden"]}})
    assert decide(pol, context={KEYS: ["a", "b"]}).allowed
    assert not decide(pol, context={KEYS: ["a", "forbidden"]}).allowed


def test_deny_with_null_condition_blocks_unattested_callers_only():
    pol = policy(
        allow({"AWS": ROLE}, "kms:Decrypt", Condition={"StringEqualsIgnoreCase": {PCR0: HEX}}),
        deny({"AWS": ROLE}, "kms:Decrypt", Sid="NoAttestation", Condition={"Null": {PCR0: "true"}}),
    )
    unattested = decide(pol, SESSION)
    assert not unattested.allowed and unattested.explicit_deny
    wrong = decide(pol, SESSION, context={PCR0: "00" * 48})
    assert not wrong.allowed and not wrong.explicit_deny
    assert decide(pol, SESSION, context={PCR0: HEX}).allowed


# ---- validation: what parse_policy refuses -----------------------------------------------------


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ("not json", "not valid JSON"),
        ("[]", "JSON object"),
        ({"Statement": []}, "non-empty Statement"),
        ({"Version": "2020-01-01", "Statement": [allow()]}, "Version"),
        ({"Statement": [allow()], "Extra": 1}, "unknown top-level"),
        ({"Statement": ["x"]}, "not a JSON object"),
        ({"Statement": [{**allow(), "Effect": "Maybe"}]}, "Effect"),
        ({"Statement": [{**allow(), "Bogus": 1}]}, "unknown element"),
        ({"Statement": [{k: v for k, v in allow().items() if k != "Principal"}]}, "no Principal"),
        ({"Statement": [{**allow(), "NotPrincipal": {"AWS": ALICE.arn}}]}, "NotPrincipal"),
        ({"Statement": [{**allow(), "Principal": {"AWS": "alice"}}]}, "invalid principals"),
        (
            {"Statement": [{**allow(), "Principal": {"AWS": "arn:aws:iam::1234:user/x"}}]},
            "invalid principals",
        ),
        ({"Statement": [{**allow(), "Principal": {"Robot": "x"}}]}, "unknown principal type"),
        ({"Statement": [{**allow(), "Principal": "alice"}]}, "Principal must be"),
        ({"Statement": [{k: v for k, v in allow().items() if k != "Action"}]}, "exactly one of Action"),
        ({"Statement": [{**allow(), "NotAction": "kms:Encrypt"}]}, "exactly one of Action"),
        ({"Statement": [{**allow(), "Action": "Decrypt"}]}, "not an action"),
        ({"Statement": [{**allow(), "Action": []}]}, "must not be empty"),
        ({"Statement": [{**allow(), "Action": 5}]}, "string or a list"),
        ({"Statement": [{k: v for k, v in allow().items() if k != "Resource"}]}, "exactly one of Resource"),
        ({"Statement": [{**allow(), "Resource": "key/1"}]}, "Resource must be"),
        ({"Statement": [allow(Condition={"NumericEquals": {"kms:x": "1"}})]}, "not supported"),
        ({"Statement": [allow(Condition={"StringEquals": "x"})]}, "must map condition keys"),
        ({"Statement": [allow(Condition={"StringEquals": {"nocolon": "x"}})]}, "not a condition key"),
        ({"Statement": [allow(Condition={"StringEquals": {"kms:x": {"a": 1}}})]}, "values must be"),
        ({"Statement": [allow(Condition={"StringEquals": {"kms:x": []}})]}, "no values"),
        ({"Statement": [allow(Condition={"Null": {"kms:x": "maybe"}})]}, "'true' or 'false'"),
        ({"Statement": [allow(Condition={"Null": {"kms:x": ["true", "false"]}})]}, "exactly one value"),
        ({"Statement": [allow(Condition={"ForAnyValue:Null": {"kms:x": "true"}})]}, "Null takes neither"),
        ({"Statement": [allow(Condition=[])]}, "Condition must be an object"),
        ({"Statement": [allow(Sid="A"), allow(Sid="A")]}, "two statements"),
        ({"Statement": [allow(Sid="bad{sid}")]}, "invalid Sid"),
        ({"Statement": [allow(Sid="x" * 40000)]}, "larger than"),
    ],
)
def test_parse_refuses(document, message):
    with pytest.raises(PolicyError, match=message):
        parse_policy(document)


def test_principal_existence_check():
    doc = {"Statement": [allow({"AWS": [ALICE.arn, BOB.arn]})]}
    parse_policy(doc, principal_exists=lambda arn: True)
    with pytest.raises(PolicyError, match="invalid principals"):
        parse_policy(doc, principal_exists=lambda arn: arn == ALICE.arn)


def test_principals_lists_normalised_names():
    pol = parse_policy({"Statement": [allow({"AWS": [ACCT, ROLE]})]})
    assert pol.principals() == {f"arn:aws:iam::{ACCT}:root", ROLE}


# ---- property: hostile documents only ever raise PolicyError -----------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_json = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.text(max_size=8)
    | st.sampled_from(["*", "Allow", "Deny", "kms:*", "kms:Decrypt", ACCT, ALICE.arn, ROLE, PCR0, "true"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(
                [
                    "Version",
                    "Statement",
                    "Effect",
                    "Principal",
                    "AWS",
                    "Action",
                    "NotAction",
                    "Resource",
                    "Condition",
                    "StringEquals",
                    "Null",
                    "ForAllValues:StringLike",
                    "Sid",
                    PCR0,
                    "x",
                ]
            ),
            children,
            max_size=5,
        )
    ),
    max_leaves=25,
)


_statement = st.fixed_dictionaries(
    {
        "Effect": st.sampled_from(["Allow", "Deny"]),
        "Principal": st.sampled_from(
            ["*", {"AWS": ALICE.arn}, {"AWS": [ROLE, BOB.arn]}, {"AWS": ACCT}, {"AWS": "*"}]
        ),
        "Action": st.sampled_from(
            ["kms:*", "kms:Decrypt", ["kms:Encrypt", "kms:Decrypt"], "kms:?ecrypt", "*"]
        ),
        "Resource": st.sampled_from(["*", KEY, "arn:aws:kms:*:*:key/*"]),
    },
    optional={
        "Sid": st.text(alphabet="abcXYZ019", min_size=1, max_size=6),
        "Condition": st.dictionaries(
            st.sampled_from(
                [
                    "StringEquals",
                    "StringEqualsIgnoreCase",
                    "StringNotEquals",
                    "StringLike",
                    "Null",
                    "Bool",
                    "ForAnyValue:StringEquals",
                    "ForAllValues:StringNotLike",
                    "StringEqualsIfExists",
                    "ArnLike",
                ]
            ),
            st.dictionaries(
                st.sampled_from([PCR0, KEYS, "kms:CallerAccount", "aws:PrincipalArn", "kms:ViaService"]),
                st.sampled_from(["true", "false", HEX, HEX.upper(), "a", ["a", "b"], ACCT, ROLE, "*"]),
                min_size=1,
                max_size=3,
            ),
            min_size=1,
            max_size=3,
        ),
    },
)


@settings(max_examples=400, deadline=None)
@given(
    st.lists(_statement, min_size=1, max_size=4), st.sampled_from([{}, {PCR0: HEX}, {PCR0: HEX, KEYS: ["a"]}])
)
def test_fuzz_structured_policies_decide_consistently(statements, context):
    try:
        pol = parse_policy({"Version": "2012-10-17", "Statement": statements})
    except PolicyError:
        return  # e.g. Null with a non-boolean value, or duplicate Sids
    for caller in (ALICE, SESSION, STRANGER):
        decision = decide(pol, caller, context=context)
        assert not (decision.allowed and decision.explicit_deny)
        # Deny statements can only take permissions away: dropping them never reduces what is allowed.
        allows = [st_ for st_ in statements if st_["Effect"] == "Allow"]
        if allows:
            only_allows = parse_policy({"Version": "2012-10-17", "Statement": allows})
            if decision.allowed:
                assert decide(only_allows, caller, context=context).allowed
        elif decision.allowed:
            raise AssertionError("allowed without any Allow statement")


@settings(max_examples=400, deadline=None)
@given(_json)
def test_fuzz_parse_then_evaluate(document):
    try:
        pol = parse_policy(document if isinstance(document, dict) else {"Statement": document})
    except PolicyError:
        return
    for caller in (ALICE, SESSION, STRANGER):
        decision = decide(pol, caller, context={PCR0: HEX, KEYS: ["a"]})
        assert decision.allowed in (True, False)
        assert not (decision.allowed and decision.explicit_deny)
