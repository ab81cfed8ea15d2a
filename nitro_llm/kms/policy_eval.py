"""Key policy evaluation: the one place that decides whether a caller may use a key.

It follows AWS's rules for resource-based policies: an explicit ``Deny`` wins, otherwise any
matching ``Allow`` allows, otherwise the request is denied by default. Condition keys that are
absent from a request make positive operators false (so ``StringEqualsIgnoreCase`` on
``kms:RecipientAttestation:PCR0`` can only pass when an attestation document was verified) and
negated operators true, as in AWS.

A policy is validated in full when it is parsed: anything the evaluator does not understand
(an unknown operator, ``NotPrincipal``, a malformed principal) is refused with a
:class:`PolicyError` instead of being half-evaluated, because a security policy that silently
means less than it says is worse than one that is rejected.

Supported: ``Effect``, ``Principal`` (``"*"``, ``{"AWS": arn | account | "*" | [...]}``, other
principal types accepted but never matching our callers), ``Action``/``NotAction`` with ``*`` and
``?``, ``Resource``/``NotResource``, ``Condition`` with the String*, Arn*, ``Bool`` and ``Null``
operators, the ``IfExists`` suffix and the ``ForAnyValue:``/``ForAllValues:`` set prefixes.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from nitro_llm.kms.errors import PolicyError

MAX_POLICY_BYTES = 32 * 1024
"""AWS's limit for a key policy document."""

_VERSIONS = frozenset({"2012-10-17", "2008-10-17"})
_POLICY_FIELDS = frozenset({"Version", "Id", "Statement"})
_STATEMENT_FIELDS = frozenset(
    {
        "Sid",
        "Effect",
        "Principal",
        "NotPrincipal",
        "Action",
        "NotAction",
        "Resource",
        "NotResource",
        "Condition",
    }
)
_ACCOUNT = re.compile(r"^\d{12}$")
_IAM_PRINCIPAL = re.compile(
    r"^arn:aws[a-z-]*:(?:"
    r"iam::(?P<acct1>\d{12}):(?:root|user/[\w+=,.@/-]+|role/[\w+=,.@/-]+)"
    r"|sts::(?P<acct2>\d{12}):assumed-role/[\w+=,.@-]+/[\w+=,.@-]+"
    r")$"
)
_ACTION = re.compile(r"^(?:\*|[a-z0-9-]+:[A-Za-z0-9*?]+)$", re.IGNORECASE)
_PRINCIPAL_TYPES = frozenset({"AWS", "Service", "Federated", "CanonicalUser"})

_STRING_OPS = {
    "StringEquals": (False, False, False),  # (negated, ignore_case, wildcard)
    "StringNotEquals": (True, False, False),
    "StringEqualsIgnoreCase": (False, True, False),
    "StringNotEqualsIgnoreCase": (True, True, False),
    "StringLike": (False, False, True),
    "StringNotLike": (True, False, True),
    "ArnEquals": (False, False, True),
    "ArnLike": (False, False, True),
    "ArnNotEquals": (True, False, True),
    "ArnNotLike": (True, False, True),
    "Bool": (False, True, False),
}
_SET_PREFIXES = ("ForAnyValue:", "ForAllValues:")


@dataclass(frozen=True)
class Caller:
    """Who is asking, as KMS sees it after SigV4.

    ``arn`` is the ARN AWS reports for the caller (for an assumed role, the session ARN
    ``arn:aws:sts::ACCT:assumed-role/ROLE/SESSION``); ``role_arn`` is the IAM role behind a
    session, which is what key policies name.
    """

    arn: str
    account: str
    role_arn: str | None = None

    @property
    def principal_arn(self) -> str:
        """The value of ``aws:PrincipalArn``: the role for a session, else the caller itself."""
        return self.role_arn or self.arn


@dataclass(frozen=True)
class Request:
    """One authorisation question: may ``caller`` do ``action`` on ``resource`` given ``context``?

    ``context`` maps condition keys (any case) to one value or a list of values; keys that do not
    apply to this request are simply absent.
    """

    caller: Caller
    action: str
    resource: str
    context: Mapping[str, str | Sequence[str]] = field(default_factory=dict)


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool
    statements: tuple[str, ...]
    """The Sids (or ``#index``) of the statements that decided: the denying ones, else the allowing ones."""


@dataclass(frozen=True)
class _Condition:
    operator: str
    base: str
    set_prefix: str | None
    if_exists: bool
    key: str  # lower-cased: condition key names are case-insensitive
    values: tuple[str, ...]


@dataclass(frozen=True)
class _Statement:
    sid: str
    effect: str
    principals_any: bool
    principals: tuple[str, ...]  # normalised AWS principal strings
    actions: tuple[str, ...]
    not_action: bool
    resources: tuple[str, ...]
    not_resource: bool
    conditions: tuple[_Condition, ...]


class KeyPolicy:
    """A parsed, validated key policy. Build it with :func:`parse_policy`."""

    def __init__(self, document: Mapping[str, Any], statements: tuple[_Statement, ...]) -> None:
        self.document = document
        self._statements = statements

    def principals(self) -> set[str]:
        """Every AWS principal the policy names (for existence checks at PutKeyPolicy time)."""
        return {p for s in self._statements for p in s.principals}

    def evaluate(self, request: Request) -> Decision:
        context = _normalise_context(request.context, request.caller)
        allows: list[str] = []
        denies: list[str] = []
        for stmt in self._statements:
            if _statement_applies(stmt, request, context):
                (denies if stmt.effect == "Deny" else allows).append(stmt.sid)
        if denies:
            return Decision(allowed=False, explicit_deny=True, statements=tuple(denies))
        return Decision(allowed=bool(allows), explicit_deny=False, statements=tuple(allows))


def parse_policy(
    document: str | bytes | Mapping[str, Any],
    *,
    principal_exists: Callable[[str], bool] | None = None,
) -> KeyPolicy:
    """Validate and parse a key policy; raise :class:`PolicyError` saying what is wrong.

    ``principal_exists`` lets the emulator refuse principals it never issued, as AWS refuses
    policies naming IAM principals that do not exist.
    """
    doc = _load(document)
    unknown = set(doc) - _POLICY_FIELDS
    if unknown:
        raise PolicyError(f"the policy has unknown top-level element(s): {sorted(unknown)}")
    version = doc.get("Version", "2008-10-17")
    if not isinstance(version, str) or version not in _VERSIONS:
        raise PolicyError("the policy Version must be 2012-10-17 or 2008-10-17")
    raw = doc.get("Statement")
    if isinstance(raw, Mapping):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise PolicyError("the policy must have a non-empty Statement list")
    statements = tuple(_parse_statement(s, i) for i, s in enumerate(raw))
    seen: set[str] = set()
    for stmt in statements:
        if not stmt.sid.startswith("#"):
            if stmt.sid in seen:
                raise PolicyError(f"the policy has two statements with Sid {stmt.sid!r}")
            seen.add(stmt.sid)
    policy = KeyPolicy(doc, statements)
    if principal_exists is not None:
        for principal in sorted(policy.principals()):
            if principal != "*" and not principal_exists(principal):
                raise PolicyError(
                    "Policy contains a statement with one or more invalid principals.",
                    hint=f"{principal} is not a principal this KMS knows; use one from credentials.json",
                )
    return policy


def _load(document: str | bytes | Mapping[str, Any]) -> Mapping[str, Any]:
    if isinstance(document, Mapping):
        text = json.dumps(document)
        doc: Any = document
    else:
        text = document.decode("utf-8", "replace") if isinstance(document, bytes) else document
        if not isinstance(text, str):
            raise PolicyError("the policy must be a JSON text")
        try:
            doc = json.loads(text)
        except (ValueError, RecursionError):
            raise PolicyError("the policy is not valid JSON") from None
    if len(text.encode("utf-8")) > MAX_POLICY_BYTES:
        raise PolicyError(f"the policy is larger than {MAX_POLICY_BYTES} bytes")
    if not isinstance(doc, Mapping):
        raise PolicyError("the policy must be a JSON object")
    return doc


def _parse_statement(raw: Any, index: int) -> _Statement:
    where = f"statement {index}"
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where} is not a JSON object")
    unknown = set(raw) - _STATEMENT_FIELDS
    if unknown:
        raise PolicyError(f"{where} has unknown element(s): {sorted(unknown)}")
    sid = raw.get("Sid")
    if sid is not None and (not isinstance(sid, str) or not re.fullmatch(r"[\w +=,.@:/-]*", sid)):
        raise PolicyError(f"{where} has an invalid Sid")
    label = sid if sid else f"#{index}"
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise PolicyError(f"{where}: Effect must be 'Allow' or 'Deny'")
    if "NotPrincipal" in raw:
        raise PolicyError(f"{where}: NotPrincipal is not supported in key policies here; name principals")
    if "Principal" not in raw:
        raise PolicyError(f"{where} has no Principal (key policies must name one)")
    principals_any, principals = _parse_principal(raw["Principal"], where)
    actions, not_action = _either(raw, "Action", "NotAction", where)
    for action in actions:
        if not _ACTION.match(action):
            raise PolicyError(f"{where}: {action!r} is not an action like 'kms:Decrypt' or 'kms:*'")
    resources, not_resource = _either(raw, "Resource", "NotResource", where)
    for resource in resources:
        if resource != "*" and not resource.startswith("arn:"):
            raise PolicyError(f"{where}: Resource must be '*' or an ARN")
    conditions = _parse_conditions(raw.get("Condition", {}), where)
    return _Statement(
        sid=label,
        effect=effect,
        principals_any=principals_any,
        principals=principals,
        actions=actions,
        not_action=not_action,
        resources=resources,
        not_resource=not_resource,
        conditions=conditions,
    )


def _parse_principal(raw: Any, where: str) -> tuple[bool, tuple[str, ...]]:
    if raw == "*":
        return True, ()
    if not isinstance(raw, Mapping) or not raw:
        raise PolicyError(f'{where}: Principal must be "*" or an object like {{"AWS": "arn:..."}}')
    unknown = set(raw) - _PRINCIPAL_TYPES
    if unknown:
        raise PolicyError(f"{where}: unknown principal type(s) {sorted(unknown)}")
    any_principal = False
    names: list[str] = []
    for kind, value in raw.items():
        values = _strings(value, f"{where}: Principal.{kind}")
        if kind != "AWS":
            continue  # service, federated and canonical-user principals never are our callers
        for principal in values:
            if principal == "*":
                any_principal = True
            elif _ACCOUNT.match(principal):
                names.append(f"arn:aws:iam::{principal}:root")
            elif _IAM_PRINCIPAL.match(principal):
                names.append(principal)
            else:
                raise PolicyError(
                    "Policy contains a statement with one or more invalid principals.",
                    hint=f"{where}: use an account id, '*', or an IAM user, role or assumed-role ARN",
                )
    return any_principal, tuple(names)


def _either(raw: Mapping[str, Any], name: str, not_name: str, where: str) -> tuple[tuple[str, ...], bool]:
    if (name in raw) == (not_name in raw):
        raise PolicyError(f"{where} must have exactly one of {name} and {not_name}")
    key = name if name in raw else not_name
    values = _strings(raw[key], f"{where}: {key}")
    if not values:
        raise PolicyError(f"{where}: {key} must not be empty")
    return values, key == not_name


def _strings(value: Any, where: str) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return tuple(value)
    raise PolicyError(f"{where} must be a string or a list of strings")


def _parse_conditions(raw: Any, where: str) -> tuple[_Condition, ...]:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{where}: Condition must be an object of operators")
    out: list[_Condition] = []
    for operator, block in raw.items():
        set_prefix, base, if_exists = _split_operator(str(operator), where)
        if not isinstance(block, Mapping) or not block:
            raise PolicyError(f"{where}: Condition {operator} must map condition keys to values")
        for key, value in block.items():
            if not isinstance(key, str) or not re.fullmatch(r"[A-Za-z0-9]+:[\w:./-]+", key):
                raise PolicyError(f"{where}: {key!r} is not a condition key like 'kms:EncryptionContext:app'")
            values = _condition_values(value, f"{where}: Condition {operator} {key}")
            if base in ("Null", "Bool") and any(v.lower() not in ("true", "false") for v in values):
                raise PolicyError(f"{where}: {base} takes 'true' or 'false'")
            if base == "Null" and len(values) != 1:
                raise PolicyError(f"{where}: Null takes exactly one value")
            out.append(_Condition(str(operator), base, set_prefix, if_exists, key.lower(), values))
    return tuple(out)


def _split_operator(operator: str, where: str) -> tuple[str | None, str, bool]:
    set_prefix = next((p for p in _SET_PREFIXES if operator.startswith(p)), None)
    base = operator[len(set_prefix) :] if set_prefix else operator
    if_exists = base.endswith("IfExists")
    if if_exists:
        base = base[: -len("IfExists")]
    if base == "Null":
        if set_prefix or if_exists:
            raise PolicyError(f"{where}: Null takes neither a set prefix nor IfExists")
    elif base not in _STRING_OPS:
        raise PolicyError(
            f"{where}: condition operator {operator!r} is not supported",
            hint="use String*, Arn*, Bool or Null (optionally ForAnyValue:/ForAllValues:, IfExists)",
        )
    return set_prefix, base, if_exists


def _condition_values(value: Any, where: str) -> tuple[str, ...]:
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PolicyError(f"{where}: no values")
    out: list[str] = []
    for item in items:
        if isinstance(item, bool):
            out.append("true" if item else "false")
        elif isinstance(item, str | int | float):
            out.append(str(item))
        else:
            raise PolicyError(f"{where}: values must be strings, numbers or booleans")
    return tuple(out)


def _normalise_context(
    context: Mapping[str, str | Sequence[str]], caller: Caller
) -> dict[str, tuple[str, ...]]:
    """Lower-case the key names and add the global keys every request has."""
    out: dict[str, list[str]] = {}
    for key, value in context.items():
        values = [value] if isinstance(value, str) else list(value)
        out.setdefault(key.lower(), []).extend(values)
    out.setdefault("aws:principalarn", [caller.principal_arn])
    out.setdefault("aws:principalaccount", [caller.account])
    out.setdefault("kms:calleraccount", [caller.account])
    return {k: tuple(v) for k, v in out.items()}


def _statement_applies(stmt: _Statement, request: Request, context: Mapping[str, tuple[str, ...]]) -> bool:
    return (
        _principal_matches(stmt, request.caller)
        and _any_match(stmt.actions, request.action, ignore_case=True) != stmt.not_action
        and _any_match(stmt.resources, request.resource, ignore_case=False) != stmt.not_resource
        and all(_condition_holds(c, context) for c in stmt.conditions)
    )


def _principal_matches(stmt: _Statement, caller: Caller) -> bool:
    if stmt.principals_any:
        return True
    for principal in stmt.principals:
        if principal == f"arn:aws:iam::{caller.account}:root":
            return True  # the account: with no IAM policies here, every principal of the account
        if principal in (caller.arn, caller.role_arn):
            return True
    return False


def _any_match(patterns: Iterable[str], value: str, *, ignore_case: bool) -> bool:
    return any(_wildcard(p, ignore_case).fullmatch(value) for p in patterns)


@lru_cache(maxsize=1024)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    """IAM wildcards: ``*`` any run of characters, ``?`` one character, everything else literal."""
    body = "".join(".*" if ch == "*" else "." if ch == "?" else re.escape(ch) for ch in pattern)
    return re.compile(body, (re.IGNORECASE | re.DOTALL) if ignore_case else re.DOTALL)


def _condition_holds(cond: _Condition, context: Mapping[str, tuple[str, ...]]) -> bool:
    present = cond.key in context
    if cond.base == "Null":
        absent = not present or not context[cond.key]
        return absent == (cond.values[0].lower() == "true")
    negated, ignore_case, wildcard = _STRING_OPS[cond.base]
    if not present:
        if cond.if_exists:
            return True
        if cond.set_prefix == "ForAllValues:":
            return True  # AWS: an empty set satisfies ForAllValues (a known pitfall, kept faithfully)
        if cond.set_prefix == "ForAnyValue:":
            return False
        return negated
    values = context[cond.key]

    def one(actual: str) -> bool:
        matched = any(_value_matches(p, actual, ignore_case, wildcard) for p in cond.values)
        return not matched if negated else matched

    if cond.set_prefix == "ForAllValues:":
        return all(one(v) for v in values)
    if negated and cond.set_prefix is None:
        return all(one(v) for v in values)  # "not equal" to every value the request carries
    return any(one(v) for v in values)


def _value_matches(pattern: str, actual: str, ignore_case: bool, wildcard: bool) -> bool:
    if wildcard:
        return _wildcard(pattern, ignore_case).fullmatch(actual) is not None
    if ignore_case:
        return pattern.casefold() == actual.casefold()
    return pattern == actual
