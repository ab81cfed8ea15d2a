"""The operator's steps: create the fleet key, rotate it, end a rotation's overlap.

A new generation is a secret KMS generates and returns only encrypted
(``GenerateDataKeyWithoutPlaintext``, bound to the fleet-key purpose, id and generation): the
operator's machine never holds it, so neither does anything the operator runs. Rotation is in two
steps so that no client is refused while replicas pick up the change:

1. ``rotate``: a new generation becomes ``current`` (attested from now on) and the old one becomes
   ``previous`` (still opened): a client that verified the old key keeps being answered.
2. ``retire``, once clients have re-attested (their cache lasts until the NSM leaf certificate expires,
   about 3 hours on Nitro): only the new generation is opened; a request sealed to the old key gets
   ``attested_descriptor_unknown`` and its client re-attests. Add the retired id to the key policy
   (``build_fleet_key_policy(retired_ids=...)``) so that no enclave can obtain it again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from nitro_llm.fleet.errors import FleetKeyError
from nitro_llm.fleet.key_file import (
    FleetKeyFile,
    FleetKeyGeneration,
    check_kms_key_arn,
    new_generation_id,
    now_iso,
)


# The operator's own KMS call failed: nothing was written.
class FleetKeyKmsError(FleetKeyError, code="fleet_key_kms_failed"):
    """check the KMS key id, the operator's credentials and that the key policy lets them
    GenerateDataKeyWithoutPlaintext for the fleet-key purpose ('nitro-llm fleet-key policy')"""


def new_generation(kms: Any, kms_key_id: str, generation: int) -> tuple[str, FleetKeyGeneration]:
    """Have KMS make a fresh secret for ``generation``; return (the KMS key's ARN, the generation)."""
    generation_id = new_generation_id()
    probe = FleetKeyGeneration(generation_id, generation, b"\x00")  # for its encryption context
    try:
        reply = kms.generate_data_key_without_plaintext(
            KeyId=kms_key_id, KeySpec="AES_256", EncryptionContext=probe.encryption_context()
        )
    except ClientError as exc:  # only AWS's error code: its message may quote the request
        code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
        raise FleetKeyKmsError(f"KMS refused to generate the fleet key: {code}") from None
    except BotoCoreError as exc:
        raise FleetKeyKmsError(f"KMS could not be reached ({type(exc).__name__})") from None
    arn = check_kms_key_arn(reply.get("KeyId"), error=FleetKeyKmsError)
    return arn, FleetKeyGeneration(generation_id, generation, bytes(reply["CiphertextBlob"]), now_iso())


def create(path: Path, kms: Any, kms_key_id: str, *, replace: bool = False) -> FleetKeyFile:
    """A new fleet key file with generation 1. An existing file is kept unless ``replace``: replacing
    it strands every replica and client on the old key at once (use ``rotate``)."""
    if path.exists() and not replace:
        raise FleetKeyError(
            f"{path} already holds a fleet key",
            hint="use 'nitro-llm fleet-key rotate' to change it without refusing anyone",
        )
    arn, generation = new_generation(kms, kms_key_id, 1)
    keys = FleetKeyFile(kms_key_arn=arn, current=generation)
    keys.save(path)
    return keys


def rotate(path: Path, kms: Any) -> FleetKeyFile:
    """Step 1: a new current generation; the current one stays accepted (the overlap)."""
    keys = FleetKeyFile.load(path)
    if keys.previous is not None:  # refuse before asking KMS for a key that would not be used
        keys.rotated(keys.current)
    _, generation = new_generation(kms, keys.kms_key_arn, keys.current.generation + 1)
    rotated = keys.rotated(generation)
    rotated.save(path)
    return rotated


def retire(path: Path) -> tuple[FleetKeyFile, str]:
    """Step 2: end the overlap. Returns the file and the retired generation's id (for the policy)."""
    keys = FleetKeyFile.load(path)
    retired = keys.retired()
    assert keys.previous is not None  # retired() refused otherwise
    retired.save(path)
    return retired, keys.previous.id
