"""The KMS operations: parameters in, AWS-shaped answers (or AWS's exceptions) out.

Each operation authorises against the key's policy before it touches key material, in AWS's
order: find the key, verify a ``Recipient`` document (its PCRs are condition values), evaluate the
key policy, check the key's state, then do the cryptography. Answers to attested requests carry
``CiphertextForRecipient`` and no plaintext, exactly as AWS's do.

Operations that AWS authorises with IAM identity policies rather than a key policy (CreateKey,
ListAliases, ListKeys, GenerateRandom) use a fixed identity policy here: only the admin may create
keys; every principal of the account may list and ask for random bytes.
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from nitro_llm.kms import cms
from nitro_llm.kms.errors import (
    AccessDenied,
    Disabled,
    DryRunOperation,
    IncorrectKey,
    InvalidAliasName,
    InvalidCiphertext,
    InvalidKeyUsage,
    InvalidMarker,
    InvalidState,
    MalformedPolicyDocument,
    NotFound,
    PolicyError,
    SerializationFailed,
    UnknownOperation,
    UnsupportedOperation,
    ValidationFailed,
)
from nitro_llm.kms.policy_eval import KeyPolicy, Request, parse_policy
from nitro_llm_dev.kms_emulator import ciphertext
from nitro_llm_dev.kms_emulator.keystore import DISABLED, ENABLED, PENDING_DELETION, Key, KeyStore
from nitro_llm_dev.kms_emulator.principals import Principal, Principals
from nitro_llm_dev.kms_emulator.recipient import AttestedRecipient, RecipientVerifier

SYMMETRIC_DEFAULT = "SYMMETRIC_DEFAULT"
MAX_PLAINTEXT = 4096
MAX_CIPHERTEXT = 6144
MAX_RANDOM = 1024
MAX_DESCRIPTION = 8192
MAX_CONTEXT_CHARS = 8192
_ALIAS_NAME = re.compile(r"^alias/[a-zA-Z0-9/_-]+$")
_DATA_KEY_SPECS = {"AES_256": 32, "AES_128": 16}
_DRY_RUN = "The request would have succeeded, but the DryRun option is set."


@dataclass
class Audit:
    """What the request log line may say about a request: never its data."""

    key_id: str = "-"
    attested_pcr0: str = ""


Handler = Callable[["KmsService", Principal, Mapping[str, Any], Audit], dict[str, Any]]


class KmsService:
    def __init__(self, store: KeyStore, principals: Principals, recipients: RecipientVerifier) -> None:
        self.store = store
        self.principals = principals
        self.recipients = recipients

    def call(
        self, operation: str, caller: Principal, params: Mapping[str, Any], audit: Audit
    ) -> dict[str, Any]:
        handler = OPERATIONS.get(operation)
        if handler is None:
            raise UnknownOperation("", hint=f"the emulator implements: {', '.join(sorted(OPERATIONS))}")
        return handler(self, caller, params, audit)

    # ---- authorisation -------------------------------------------------------------------------

    def authorize(
        self,
        caller: Principal,
        action: str,
        key: Key,
        *,
        context: Mapping[str, str] | None = None,
        recipient: AttestedRecipient | None = None,
    ) -> None:
        conditions: dict[str, str | list[str]] = {}
        if context:
            for name, value in context.items():
                conditions[f"kms:EncryptionContext:{name}"] = value
            conditions["kms:EncryptionContextKeys"] = list(context)
        if recipient is not None:
            conditions.update(recipient.conditions)
        decision = key.policy.evaluate(Request(caller.caller(), action, key.arn, conditions))
        if decision.allowed:
            return
        reason = (
            "with an explicit deny in a resource-based policy"
            if decision.explicit_deny
            else f"because no resource-based policy allows the {action} action"
        )
        raise AccessDenied(
            f"User: {caller.arn} is not authorized to perform: {action} on resource: {key.arn} {reason}",
            hint=_denial_hint(decision.explicit_deny, recipient),
        )

    def authorize_identity(self, caller: Principal, action: str) -> None:
        """The emulator's fixed IAM identity policies for operations without a key resource."""
        if action == "kms:CreateKey" and caller.name != "admin":
            raise AccessDenied(
                f"User: {caller.arn} is not authorized to perform: {action} because no identity-based "
                f"policy allows the {action} action",
                hint="create keys with the admin credentials from credentials.json",
            )

    def check_policy(self, caller: Principal, text: Any, bypass_lockout: bool) -> KeyPolicy:
        """Validate a policy for CreateKey/PutKeyPolicy, including AWS's lockout safety check."""
        if not isinstance(text, str) or not text:
            raise MalformedPolicyDocument("The policy must be a non-empty JSON text.")
        try:
            policy = parse_policy(text, principal_exists=self.principals.exists)
        except PolicyError as exc:
            raise MalformedPolicyDocument(exc.message, hint=exc.hint) from None
        if not bypass_lockout:
            probe = Request(caller.caller(), "kms:PutKeyPolicy", "*")
            if not policy.evaluate(probe).allowed:
                raise MalformedPolicyDocument(
                    "The new key policy will not allow you to update the key policy in the future.",
                    hint="grant your own principal kms:PutKeyPolicy, or set BypassPolicyLockoutSafetyCheck",
                )
        return policy

    def default_policy(self) -> str:
        """AWS's default key policy: the account (here: every principal of it) may do everything."""
        return json.dumps(
            {
                "Version": "2012-10-17",
                "Id": "key-default-1",
                "Statement": [
                    {
                        "Sid": "Enable IAM User Permissions",
                        "Effect": "Allow",
                        "Principal": {"AWS": f"arn:aws:iam::{self.principals.account}:root"},
                        "Action": "kms:*",
                        "Resource": "*",
                    }
                ],
            },
            indent=2,
        )


def _denial_hint(explicit: bool, recipient: AttestedRecipient | None) -> str:
    if recipient is None:
        return (
            "the key policy decides; callers that need attestation must send Recipient with an NSM document"
        )
    if recipient.debug:
        return "the document is from a debug-mode enclave (all-zero PCRs), which the policy does not name"
    if explicit:
        return "an explicit Deny statement in the key policy matched this request"
    return "the attested PCRs are not the ones the key policy names: other enclave code, model or config"


# ---- parameter helpers -------------------------------------------------------------------------


def _required_str(params: Mapping[str, Any], name: str) -> str:
    value = params.get(name)
    if value is None:
        raise ValidationFailed(
            f"1 validation error detected: Value null at '{_camel(name)}' failed to satisfy constraint: "
            "Member must not be null"
        )
    if not isinstance(value, str) or not value:
        raise SerializationFailed(f"{name} must be a non-empty string")
    return value


def _optional_str(params: Mapping[str, Any], name: str) -> str | None:
    value = params.get(name)
    if value is not None and not isinstance(value, str):
        raise SerializationFailed(f"{name} must be a string")
    return value


def _optional_int(params: Mapping[str, Any], name: str) -> int | None:
    value = params.get(name)
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise SerializationFailed(f"{name} must be an integer")
    return value


def _optional_bool(params: Mapping[str, Any], name: str) -> bool:
    value = params.get(name, False)
    if not isinstance(value, bool):
        raise SerializationFailed(f"{name} must be a boolean")
    return value


def _blob(params: Mapping[str, Any], name: str, *, max_len: int) -> bytes:
    encoded = _required_str(params, name)
    try:
        data = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise SerializationFailed(f"{name} is not valid base64") from None
    if not 1 <= len(data) <= max_len:
        raise ValidationFailed(
            f"1 validation error detected: Value at '{_camel(name)}' failed to satisfy constraint: "
            f"Member must have length between 1 and {max_len}"
        )
    return data


def _context(params: Mapping[str, Any]) -> dict[str, str]:
    value = params.get("EncryptionContext")
    if value is None:
        return {}
    if not isinstance(value, Mapping) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in value.items()
    ):
        raise SerializationFailed("EncryptionContext must map strings to strings")
    if sum(len(k) + len(v) for k, v in value.items()) > MAX_CONTEXT_CHARS:
        raise ValidationFailed(f"EncryptionContext must not exceed {MAX_CONTEXT_CHARS} characters")
    return dict(value)


def _camel(name: str) -> str:
    return name[:1].lower() + name[1:]


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def _check_algorithm(params: Mapping[str, Any]) -> None:
    algorithm = _optional_str(params, "EncryptionAlgorithm")
    if algorithm not in (None, SYMMETRIC_DEFAULT):
        raise InvalidKeyUsage(f"The encryption algorithm {algorithm[:64]} is not supported by this key.")


def _usable(key: Key) -> None:
    """Key state check for cryptographic operations."""
    if key.state == DISABLED:
        raise Disabled(f"{key.arn} is disabled.", hint="enable it with EnableKey (admin)")
    if key.state == PENDING_DELETION:
        raise InvalidState(f"{key.arn} is pending deletion.", hint="CancelKeyDeletion, then EnableKey")


def _recipient(service: KmsService, params: Mapping[str, Any], audit: Audit) -> AttestedRecipient | None:
    if params.get("Recipient") is None:
        return None
    recipient = service.recipients.verify(params["Recipient"])
    audit.attested_pcr0 = recipient.pcr0[:16]
    return recipient


def _metadata(key: Key, account: str) -> dict[str, Any]:
    meta: dict[str, Any] = {
        "AWSAccountId": account,
        "KeyId": key.key_id,
        "Arn": key.arn,
        "CreationDate": key.created,
        "Enabled": key.state == ENABLED,
        "Description": key.description,
        "KeyUsage": "ENCRYPT_DECRYPT",
        "KeyState": key.state,
        "Origin": "AWS_KMS",
        "KeyManager": "CUSTOMER",
        "CustomerMasterKeySpec": SYMMETRIC_DEFAULT,
        "KeySpec": SYMMETRIC_DEFAULT,
        "EncryptionAlgorithms": [SYMMETRIC_DEFAULT],
        "MultiRegion": False,
    }
    if key.deletion_date is not None:
        meta["DeletionDate"] = key.deletion_date
    return meta


def _page(items: list[Any], params: Mapping[str, Any]) -> tuple[list[Any], dict[str, Any]]:
    limit = _optional_int(params, "Limit")
    limit = 50 if limit is None else limit
    if not 1 <= limit <= 1000:
        raise ValidationFailed("Limit must be between 1 and 1000")
    marker = _optional_str(params, "Marker")
    start = 0
    if marker is not None:
        if not marker.isdigit() or int(marker) > len(items):
            raise InvalidMarker("The marker is not valid.", hint="pass NextMarker from the previous page")
        start = int(marker)
    page = items[start : start + limit]
    end = start + len(page)
    extra: dict[str, Any] = {"Truncated": end < len(items)}
    if end < len(items):
        extra["NextMarker"] = str(end)
    return page, extra


# ---- operations --------------------------------------------------------------------------------


def create_key(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    service.authorize_identity(caller, "kms:CreateKey")
    for name, allowed in (
        ("KeyUsage", "ENCRYPT_DECRYPT"),
        ("KeySpec", SYMMETRIC_DEFAULT),
        ("CustomerMasterKeySpec", SYMMETRIC_DEFAULT),
        ("Origin", "AWS_KMS"),
    ):
        value = _optional_str(params, name)
        if value not in (None, allowed):
            raise UnsupportedOperation(
                f"{name} {value[:64]} is not supported by the emulator (only {allowed})."
            )
    for name in ("CustomKeyStoreId", "XksKeyId"):
        if params.get(name) is not None:
            raise UnsupportedOperation(f"{name} is not supported by the emulator.")
    if params.get("MultiRegion"):
        raise UnsupportedOperation("Multi-Region keys are not supported by the emulator.")
    description = _optional_str(params, "Description") or ""
    if len(description) > MAX_DESCRIPTION:
        raise ValidationFailed(f"Description must be at most {MAX_DESCRIPTION} characters")
    policy_text = _optional_str(params, "Policy") or service.default_policy()
    policy = service.check_policy(
        caller, policy_text, _optional_bool(params, "BypassPolicyLockoutSafetyCheck")
    )
    tags = _tags(params.get("Tags"))
    key = service.store.create(policy_text=policy_text, policy=policy, description=description, tags=tags)
    audit.key_id = key.key_id
    return {"KeyMetadata": _metadata(key, service.principals.account)}


def _tags(raw: Any) -> list[tuple[str, str]]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise SerializationFailed("Tags must be a list")
    out = []
    for tag in raw:
        if not isinstance(tag, Mapping) or not isinstance(tag.get("TagKey"), str):
            raise SerializationFailed("each tag needs TagKey and TagValue strings")
        value = tag.get("TagValue", "")
        if not isinstance(value, str):
            raise SerializationFailed("each tag needs TagKey and TagValue strings")
        out.append((tag["TagKey"], value))
    return out


def describe_key(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"))
    audit.key_id = key.key_id
    service.authorize(caller, "kms:DescribeKey", key)
    return {"KeyMetadata": _metadata(key, service.principals.account)}


def get_key_policy(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"), allow_alias=False)
    audit.key_id = key.key_id
    _policy_name(params)
    service.authorize(caller, "kms:GetKeyPolicy", key)
    return {"Policy": key.policy_text, "PolicyName": "default"}


def list_key_policies(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"), allow_alias=False)
    audit.key_id = key.key_id
    service.authorize(caller, "kms:ListKeyPolicies", key)
    return {"PolicyNames": ["default"], "Truncated": False}


def put_key_policy(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"), allow_alias=False)
    audit.key_id = key.key_id
    _policy_name(params)
    service.authorize(caller, "kms:PutKeyPolicy", key)
    text = _required_str(params, "Policy")
    policy = service.check_policy(caller, text, _optional_bool(params, "BypassPolicyLockoutSafetyCheck"))
    service.store.update(key.key_id, lambda k: replace(k, policy_text=text, policy=policy))
    return {}


def _policy_name(params: Mapping[str, Any]) -> None:
    name = _optional_str(params, "PolicyName")
    if name not in (None, "default"):
        raise NotFound("No such policy exists", hint="the only key policy name is 'default'")


def create_alias(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    name = _required_str(params, "AliasName")
    if len(name) > 256 or not _ALIAS_NAME.match(name):
        raise ValidationFailed(
            "1 validation error detected: Value at 'aliasName' failed to satisfy constraint: Member must "
            "satisfy regular expression pattern: ^[a-zA-Z0-9:/_-]+$ and start with alias/"
        )
    if name.startswith("alias/aws/"):
        raise InvalidAliasName(f"Alias {name} must not begin with alias/aws/", hint="alias/aws/ is reserved")
    key = service.store.resolve(_required_str(params, "TargetKeyId"), allow_alias=False)
    audit.key_id = key.key_id
    service.authorize(caller, "kms:CreateAlias", key)
    if key.state == PENDING_DELETION:
        raise InvalidState(f"{key.arn} is pending deletion.")
    service.store.create_alias(name, key.key_id)
    return {}


def list_aliases(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    service.authorize_identity(caller, "kms:ListAliases")
    key_ref = _optional_str(params, "KeyId")
    key_id = None
    if key_ref is not None:
        key_id = service.store.resolve(key_ref, allow_alias=False).key_id
        audit.key_id = key_id
    aliases = service.store.aliases(key_id)
    page, extra = _page(aliases, params)
    return {
        "Aliases": [
            {
                "AliasName": a.name,
                "AliasArn": a.arn,
                "TargetKeyId": a.key_id,
                "CreationDate": a.created,
                "LastUpdatedDate": a.created,
            }
            for a in page
        ],
        **extra,
    }


def list_keys(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    service.authorize_identity(caller, "kms:ListKeys")
    page, extra = _page(service.store.keys(), params)
    return {"Keys": [{"KeyId": k.key_id, "KeyArn": k.arn} for k in page], **extra}


def _set_state(action: str, target: str) -> Handler:
    def handler(
        service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
    ) -> dict[str, Any]:
        key = service.store.resolve(_required_str(params, "KeyId"), allow_alias=False)
        audit.key_id = key.key_id
        service.authorize(caller, action, key)
        if key.state == PENDING_DELETION:
            raise InvalidState(f"{key.arn} is pending deletion.", hint="CancelKeyDeletion first")
        service.store.update(key.key_id, lambda k: replace(k, state=target))
        return {}

    return handler


def schedule_key_deletion(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"), allow_alias=False)
    audit.key_id = key.key_id
    service.authorize(caller, "kms:ScheduleKeyDeletion", key)
    days = _optional_int(params, "PendingWindowInDays")
    days = 30 if days is None else days
    if not 7 <= days <= 30:
        raise ValidationFailed("PendingWindowInDays must be between 7 and 30")
    if key.state == PENDING_DELETION:
        raise InvalidState(f"{key.arn} is pending deletion.")
    when = time.time() + days * 86400
    service.store.update(key.key_id, lambda k: replace(k, state=PENDING_DELETION, deletion_date=when))
    return {"KeyId": key.arn, "DeletionDate": when, "KeyState": PENDING_DELETION, "PendingWindowInDays": days}


def cancel_key_deletion(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"), allow_alias=False)
    audit.key_id = key.key_id
    service.authorize(caller, "kms:CancelKeyDeletion", key)
    if key.state != PENDING_DELETION:
        raise InvalidState(f"{key.arn} is not pending deletion.")
    service.store.update(key.key_id, lambda k: replace(k, state=DISABLED, deletion_date=None))
    return {"KeyId": key.arn}


def encrypt(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"))
    audit.key_id = key.key_id
    plaintext = _blob(params, "Plaintext", max_len=MAX_PLAINTEXT)
    context = _context(params)
    _check_algorithm(params)
    service.authorize(caller, "kms:Encrypt", key, context=context)
    _usable(key)
    if _optional_bool(params, "DryRun"):
        raise DryRunOperation(_DRY_RUN)
    blob = ciphertext.seal(key.material, key.key_id, plaintext, context)
    return {"CiphertextBlob": _b64(blob), "KeyId": key.arn, "EncryptionAlgorithm": SYMMETRIC_DEFAULT}


def generate_data_key(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    return _data_key(service, caller, params, audit, with_plaintext=True)


def generate_data_key_without_plaintext(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    return _data_key(service, caller, params, audit, with_plaintext=False)


def _data_key(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit, *, with_plaintext: bool
) -> dict[str, Any]:
    key = service.store.resolve(_required_str(params, "KeyId"))
    audit.key_id = key.key_id
    size = _data_key_size(params)
    context = _context(params)
    recipient = _recipient(service, params, audit) if with_plaintext else None
    action = "kms:GenerateDataKey" if with_plaintext else "kms:GenerateDataKeyWithoutPlaintext"
    service.authorize(caller, action, key, context=context, recipient=recipient)
    _usable(key)
    if _optional_bool(params, "DryRun"):
        raise DryRunOperation(_DRY_RUN)
    data_key = os.urandom(size)
    answer: dict[str, Any] = {
        "CiphertextBlob": _b64(ciphertext.seal(key.material, key.key_id, data_key, context)),
        "KeyId": key.arn,
    }
    if recipient is not None:
        answer["CiphertextForRecipient"] = _b64(cms.build_enveloped_data(data_key, recipient.public_key))
    elif with_plaintext:
        answer["Plaintext"] = _b64(data_key)
    return answer


def _data_key_size(params: Mapping[str, Any]) -> int:
    spec = _optional_str(params, "KeySpec")
    count = _optional_int(params, "NumberOfBytes")
    if (spec is None) == (count is None):
        raise ValidationFailed("Please specify either number of bytes or key spec.")
    if spec is not None:
        if spec not in _DATA_KEY_SPECS:
            raise ValidationFailed(
                "1 validation error detected: Value at 'keySpec' failed to satisfy constraint: Member must "
                "satisfy enum value set: [AES_256, AES_128]"
            )
        return _DATA_KEY_SPECS[spec]
    assert count is not None
    if not 1 <= count <= MAX_RANDOM:
        raise ValidationFailed(
            "1 validation error detected: Value at 'numberOfBytes' failed to satisfy constraint: Member must "
            f"have value between 1 and {MAX_RANDOM}"
        )
    return count


def decrypt(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    blob = _blob(params, "CiphertextBlob", max_len=MAX_CIPHERTEXT)
    context = _context(params)
    _check_algorithm(params)
    key = service.store.get(ciphertext.key_id_of(blob))
    if key is None:
        raise InvalidCiphertext("", hint="the blob names a key this KMS does not hold")
    audit.key_id = key.key_id
    named = _optional_str(params, "KeyId")
    if named is not None and service.store.resolve(named).key_id != key.key_id:
        raise IncorrectKey(
            "The key ID in the request does not identify a KMS key that can perform this operation.",
            hint="omit KeyId, or name the key the ciphertext was encrypted under",
        )
    recipient = _recipient(service, params, audit)
    service.authorize(caller, "kms:Decrypt", key, context=context, recipient=recipient)
    _usable(key)
    if _optional_bool(params, "DryRun"):
        raise DryRunOperation(_DRY_RUN)
    plaintext = ciphertext.open_blob(key.material, blob, context)
    answer: dict[str, Any] = {"KeyId": key.arn, "EncryptionAlgorithm": SYMMETRIC_DEFAULT}
    if recipient is not None:
        answer["CiphertextForRecipient"] = _b64(cms.build_enveloped_data(plaintext, recipient.public_key))
    else:
        answer["Plaintext"] = _b64(plaintext)
    return answer


def generate_random(
    service: KmsService, caller: Principal, params: Mapping[str, Any], audit: Audit
) -> dict[str, Any]:
    service.authorize_identity(caller, "kms:GenerateRandom")
    if params.get("CustomKeyStoreId") is not None:
        raise UnsupportedOperation("CustomKeyStoreId is not supported by the emulator.")
    count = _optional_int(params, "NumberOfBytes")
    if count is None or not 1 <= count <= MAX_RANDOM:
        raise ValidationFailed(
            "1 validation error detected: Value at 'numberOfBytes' failed to satisfy constraint: Member must "
            f"have value between 1 and {MAX_RANDOM}"
        )
    recipient = _recipient(service, params, audit)
    data = os.urandom(count)
    if recipient is not None:
        return {"CiphertextForRecipient": _b64(cms.build_enveloped_data(data, recipient.public_key))}
    return {"Plaintext": _b64(data)}


OPERATIONS: dict[str, Handler] = {
    "CancelKeyDeletion": cancel_key_deletion,
    "CreateAlias": create_alias,
    "CreateKey": create_key,
    "Decrypt": decrypt,
    "DescribeKey": describe_key,
    "DisableKey": _set_state("kms:DisableKey", DISABLED),
    "EnableKey": _set_state("kms:EnableKey", ENABLED),
    "Encrypt": encrypt,
    "GenerateDataKey": generate_data_key,
    "GenerateDataKeyWithoutPlaintext": generate_data_key_without_plaintext,
    "GenerateRandom": generate_random,
    "GetKeyPolicy": get_key_policy,
    "ListAliases": list_aliases,
    "ListKeyPolicies": list_key_policies,
    "ListKeys": list_keys,
    "PutKeyPolicy": put_key_policy,
    "ScheduleKeyDeletion": schedule_key_deletion,
}
