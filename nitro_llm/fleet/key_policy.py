"""The key policy of the KMS key that wraps the fleet key: only attested enclaves ever open it.

A key of its own, not the data owners' key: data owners may ``Encrypt`` and ``GenerateDataKey``
under theirs, so any of them could mint a "fleet key" whose secret they know and have a hostile
parent hand it to the enclaves. Here nobody may ``Encrypt``; the fleet key's creators (the admin by
default) may only ``GenerateDataKeyWithoutPlaintext`` for the fleet-key purpose, so the secret is
made inside KMS and never seen by anyone; and the enclave role may ``Decrypt`` only with an
attestation document of the pinned PCRs. Retired generations can be refused to every caller by id
(``retired_ids``), so an enclave started later cannot be handed a generation that was rotated away.

The enclaves are measured with this key's ARN (``nitro-llm image build --fleet-kms-key``), so the key
exists before the image whose PCRs its policy pins: it is created with a policy that pins no image
(``pcrs=None``: nobody opens a fleet key yet), and that policy is replaced once the image is built.
During a rolling update the old and the new image each get a statement of their own, as in the data
owners' key policy (``nitro_llm.kms.key_policy``): either image's complete set of PCRs, never a mix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

from nitro_llm.fleet.key_file import ID_KEY, PURPOSE, PURPOSE_KEY
from nitro_llm.kms.errors import PolicyError
from nitro_llm.kms.key_policy import EnclaveMeasurements, admin_statement, attestation_condition_sets

_ID = re.compile(r"[0-9a-f]{16}")

ENCLAVE_OPENS_SID = "EnclaveOpensFleetKeyOnlyWithAttestation"


def build_fleet_key_policy(
    account: str,
    admin_arn: str,
    enclave_role_arn: str,
    pcrs: Mapping[int, str] | None,
    image_sha384: str | None = None,
    *,
    also_accept: Sequence[EnclaveMeasurements] = (),
    creator_arns: Sequence[str] = (),
    retired_ids: Sequence[str] = (),
    unsafe_allow_debug_pcrs: bool = False,
) -> dict[str, Any]:
    """The policy document for the fleet key's KMS key (a JSON-ready dict).

    ``pcrs``/``image_sha384``: the measurements every replica runs (as for the data owners' key).
    ``pcrs=None`` (no ``image_sha384``, nothing in ``also_accept``): no image yet, so no enclave may
    open a fleet key; the policy the key is created with, before the image measured with its ARN
    exists. An empty mapping is refused like any statement without measurements.
    ``also_accept``: other images whose enclaves may open it (a rolling update's old or new image),
    each as a statement of its own; repeats are dropped.
    ``creator_arns``: who may create and rotate fleet keys (default: the admin).
    """
    if not re.fullmatch(r"\d{12}", account):
        raise PolicyError("the account must be a 12-digit AWS account id")
    pinned = pcrs is not None or image_sha384 is not None
    images = [*([EnclaveMeasurements(pcrs or {}, image_sha384)] if pinned else []), *also_accept]
    condition_sets = attestation_condition_sets(images, unsafe_allow_debug_pcrs=unsafe_allow_debug_pcrs)
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
        *(
            {
                "Sid": ENCLAVE_OPENS_SID if n == 1 else f"{ENCLAVE_OPENS_SID}{n}",
                "Effect": "Allow",
                "Principal": {"AWS": enclave_role_arn},
                "Action": ["kms:Decrypt"],
                "Resource": "*",
                "Condition": {"StringEqualsIgnoreCase": conditions, "StringEquals": purpose},
            }
            for n, conditions in enumerate(condition_sets, start=1)
        ),
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
