"""The key policy that makes the data owner's key usable only by an attested enclave.

Three kinds of principal, three different powers:

* the admin manages the key (describe, policy, enable/disable, aliases, deletion) but is never
  granted Encrypt, Decrypt or GenerateDataKey: running the key is not reading the data;
* clients (data owners) may GenerateDataKey, Encrypt and Decrypt: they own the data;
* the enclave role may only Decrypt, and only when KMS verified an attestation document whose PCRs
  are the measured ones. The parent instance holds the very same role credentials (as on EC2), so
  an explicit Deny for that role when no attestation is present (``Null`` on
  ``kms:RecipientAttestation:PCR0``) closes the door even if someone later adds a broader Allow.

During a rolling update two images serve at once, the old and the new: ``also_accept`` adds the
other image's measurements as a statement of its own. KMS allows a request when any Allow statement
matches, so either image's *complete* set of PCRs is accepted, never a mix of the two (one statement
listing both values per PCR would accept PCR0 of one build with PCR2 of the other).

The same function serves the local demo (PCRs from the emulated enclave) and a real deployment
(PCRs from ``nitro-cli build-enclave``); ``nitro-llm kms-policy`` prints what it returns.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from nitro_llm.kms.errors import PolicyError

ADMIN_ACTIONS: tuple[str, ...] = (
    "kms:DescribeKey",
    "kms:GetKeyPolicy",
    "kms:PutKeyPolicy",
    "kms:EnableKey",
    "kms:DisableKey",
    "kms:CreateAlias",
    "kms:UpdateAlias",
    "kms:DeleteAlias",
    "kms:ListAliases",
    "kms:ListKeyPolicies",
    "kms:ListResourceTags",
    "kms:TagResource",
    "kms:UntagResource",
    "kms:UpdateKeyDescription",
    "kms:EnableKeyRotation",
    "kms:DisableKeyRotation",
    "kms:GetKeyRotationStatus",
    "kms:ScheduleKeyDeletion",
    "kms:CancelKeyDeletion",
)
"""Listed one by one, not ``kms:Create*``/``kms:Get*``: a wildcard would also grant CreateGrant,
through which an admin could hand itself Decrypt."""

CLIENT_ACTIONS: tuple[str, ...] = ("kms:DescribeKey", "kms:GenerateDataKey", "kms:Encrypt", "kms:Decrypt")
ENCLAVE_ACTIONS: tuple[str, ...] = ("kms:Decrypt",)

_PCR_HEX = re.compile(r"^[0-9a-fA-F]{96}$")
_ALLOWED_PCRS = range(9)

ENCLAVE_ALLOW_SID = "EnclaveDecryptOnlyWithAttestation"


@dataclass(frozen=True)
class EnclaveMeasurements:
    """One enclave image's pins: PCR index -> 96-hex-digit SHA-384, and optionally ImageSha384 (the
    image digest, equal to PCR0, under KMS's other condition key)."""

    pcrs: Mapping[int, str]
    image_sha384: str | None = None


def admin_statement(admin_arn: str) -> dict[str, Any]:
    """Key administration for one principal: every key policy we write starts with it (the data
    key's and the fleet key's), so that no key can be left without an administrator."""
    return {
        "Sid": "KeyAdministration",
        "Effect": "Allow",
        "Principal": {"AWS": admin_arn},
        "Action": list(ADMIN_ACTIONS),
        "Resource": "*",
    }


def build_key_policy(
    account: str,
    admin_arn: str,
    client_arns: Sequence[str],
    enclave_role_arn: str,
    pcrs: Mapping[int, str],
    image_sha384: str | None = None,
    *,
    also_accept: Sequence[EnclaveMeasurements] = (),
    unsafe_allow_debug_pcrs: bool = False,
) -> dict[str, Any]:
    """Return the key policy document (a JSON-ready dict) for the given principals and measurements.

    ``pcrs`` maps PCR index (0..8) to its 96-hex-digit SHA-384 value; at least one PCR or
    ``image_sha384`` is required, since an enclave statement without measurements would let any
    enclave, or the parent, decrypt. All-zero values are what a debug-mode enclave reports (its
    memory is readable from the parent), so they are refused unless ``unsafe_allow_debug_pcrs``.
    ``also_accept``: other images the enclave role may decrypt from (a rolling update's old or new
    image), each checked the same way and given its own statement; repeats are dropped.
    """
    if not re.fullmatch(r"\d{12}", account):
        raise PolicyError("the account must be a 12-digit AWS account id")
    if not client_arns:
        raise PolicyError("at least one client principal is required", hint="pass the data owner's ARN")
    images = [EnclaveMeasurements(pcrs, image_sha384), *also_accept]
    condition_sets = attestation_condition_sets(images, unsafe_allow_debug_pcrs=unsafe_allow_debug_pcrs)
    statements: list[dict[str, Any]] = [
        admin_statement(admin_arn),
        {
            "Sid": "DataOwnersUseTheKey",
            "Effect": "Allow",
            "Principal": {"AWS": list(client_arns) if len(client_arns) > 1 else client_arns[0]},
            "Action": list(CLIENT_ACTIONS),
            "Resource": "*",
        },
        *(
            {
                "Sid": ENCLAVE_ALLOW_SID if n == 1 else f"{ENCLAVE_ALLOW_SID}{n}",
                "Effect": "Allow",
                "Principal": {"AWS": enclave_role_arn},
                "Action": list(ENCLAVE_ACTIONS),
                "Resource": "*",
                "Condition": {"StringEqualsIgnoreCase": conditions},
            }
            for n, conditions in enumerate(condition_sets, start=1)
        ),
        {
            "Sid": "DenyEnclaveRoleWithoutAttestation",
            "Effect": "Deny",
            "Principal": {"AWS": enclave_role_arn},
            "Action": list(ENCLAVE_ACTIONS),
            "Resource": "*",
            "Condition": {"Null": {"kms:RecipientAttestation:PCR0": "true"}},
        },
    ]
    return {"Version": "2012-10-17", "Id": "nitro-llm-key-policy", "Statement": statements}


def attestation_condition_sets(
    images: Sequence[EnclaveMeasurements], *, unsafe_allow_debug_pcrs: bool = False
) -> list[dict[str, str]]:
    """One condition set per image (duplicates once), each to be granted whole: a key policy that
    accepts the old and the new image during a rollout never accepts a mix of their PCRs. An all-zero
    measurement (a debug-mode enclave, whose memory the parent can read) is refused unless asked for."""
    condition_sets: list[dict[str, str]] = []
    for image in images:
        conditions = _attestation_conditions(image.pcrs, image.image_sha384)
        if not unsafe_allow_debug_pcrs and any(set(v) == {"0"} for v in conditions.values()):
            raise PolicyError(
                "an all-zero measurement is a debug-mode enclave, whose memory the parent can read",
                hint="use the PCRs of a production build; pass unsafe_allow_debug_pcrs=True only for "
                "experiments",
            )
        if conditions not in condition_sets:
            condition_sets.append(conditions)
    return condition_sets


def _attestation_conditions(pcrs: Mapping[int, str], image_sha384: str | None) -> dict[str, str]:
    conditions: dict[str, str] = {}
    for index, value in sorted(pcrs.items()):
        if int(index) not in _ALLOWED_PCRS:
            raise PolicyError(f"PCR{index} cannot be used in a key policy: KMS knows PCR0 to PCR8")
        if not isinstance(value, str) or not _PCR_HEX.match(value):
            raise PolicyError(
                f"PCR{index} must be 96 hex digits (a SHA-384)", hint="copy it from the build output"
            )
        conditions[f"kms:RecipientAttestation:PCR{int(index)}"] = value.lower()
    if image_sha384 is not None:
        if not _PCR_HEX.match(image_sha384):
            raise PolicyError("image_sha384 must be 96 hex digits (a SHA-384)")
        conditions["kms:RecipientAttestation:ImageSha384"] = image_sha384.lower()
    if not conditions:
        raise PolicyError(
            "the enclave statement needs at least one measurement",
            hint="pass the enclave's PCR0/1/2 (or image_sha384): without them any enclave could decrypt",
        )
    return conditions
