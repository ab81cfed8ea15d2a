"""The key policy of the KMS key that wraps the fleet key: only attested enclaves ever open it.

A key of its own, not the data owners' key: data owners may ``Encrypt`` and ``GenerateDataKey``
under theirs, so any of them could mint a "fleet key" whose secret they know and have a hostile
parent hand it to the enclaves. Here nobody may ``Encrypt``; the fleet key's creators (the admin by
default) may only ``GenerateDataKeyWithoutPlaintext`` for the fleet-key purpose, so the secret is
made inside KMS and never seen by anyone; and the enclave role may ``Decrypt`` only with an
attestation document of the pinned PCRs. Retired generations can be refused to every caller by id
(``retired_ids``), so an enclave started later cannot be handed a generation that was rotated away.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nitro_llm.fleet.key_file import ID_KEY, PURPOSE, PURPOSE_KEY
from nitro_llm.kms.errors import PolicyError
from nitro_llm.kms.key_policy import _attestation_conditions as attestation_conditions  # the same checks
from nitro_llm.kms.key_policy import admin_statement

_ID = re.compile(r"[0-9a-f]{16}")


def build_fleet_key_policy(
    account: str,
    admin_arn: str,
    enclave_role_arn: str,
    pcrs: Mapping[int, str],
    image_sha384: str | None = None,
    *,
    creator_arns: Sequence[str] = (),
    retired_ids: Sequence[str] = (),
    unsafe_allow_debug_pcrs: bool = False,
) -> dict[str, Any]:
    """The policy document for the fleet key's KMS key (a JSON-ready dict).

    ``pcrs``/``image_sha384``: the measurements every replica runs (as for the data owners' key; during
    a rolling update, apply this policy once per measurement set, or widen it as the deploy step does).
    ``creator_arns``: who may create and rotate fleet keys (default: the admin).
    """
    if not re.fullmatch(r"\d{12}", account):
        raise PolicyError("the account must be a 12-digit AWS account id")
    conditions = attestation_conditions(pcrs, image_sha384)
    if not unsafe_allow_debug_pcrs and any(set(v) == {"0"} for v in conditions.values()):
        raise PolicyError(
            "an all-zero measurement is a debug-mode enclave, whose memory the parent can read",
            hint="use the PCRs of a production build",
        )
    for retired in retired_ids:
        if not isinstance(retired, str) or not _ID.fullmatch(retired):
            raise PolicyError("a retired fleet key id is 16 lowercase hex characters")
    creators = list(creator_arns) or [admin_arn]
    purpose = {f"kms:EncryptionContext:{PURPOSE_KEY}": PURPOSE}
    statements: list[dict[str, Any]] = [
        admin_statement(admin_arn),
        {
            "Sid": "CreateFleetKeysWithoutSeeingThem",
            "Effect": "Allow",
            "Principal": {"AWS": creators if len(creators) > 1 else creators[0]},
            "Action": ["kms:GenerateDataKeyWithoutPlaintext"],
            "Resource": "*",
            "Condition": {"StringEquals": purpose},
        },
        {
            "Sid": "EnclaveOpensFleetKeyOnlyWithAttestation",
            "Effect": "Allow",
            "Principal": {"AWS": enclave_role_arn},
            "Action": ["kms:Decrypt"],
            "Resource": "*",
            "Condition": {"StringEqualsIgnoreCase": conditions, "StringEquals": purpose},
        },
        {
            "Sid": "DenyEnclaveRoleWithoutAttestation",
            "Effect": "Deny",
            "Principal": {"AWS": enclave_role_arn},
            "Action": ["kms:Decrypt"],
            "Resource": "*",
            "Condition": {"Null": {"kms:RecipientAttestation:PCR0": "true"}},
        },
    ]
    if retired_ids:
        statements.append(
            {
                "Sid": "DenyRetiredFleetKeys",
                "Effect": "Deny",
                "Principal": {"AWS": "*"},
                "Action": ["kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEquals": {f"kms:EncryptionContext:{ID_KEY}": sorted(retired_ids)}},
            }
        )
    return {"Version": "2012-10-17", "Id": "nitro-llm-fleet-key-policy", "Statement": statements}
