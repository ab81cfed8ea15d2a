"""PCR arithmetic the way Nitro does it, and the measurements ``nitro-cli`` prints.

Nitro PCRs are SHA-384 registers that start as 48 zero bytes and change only by extension:
``PCR = SHA384(PCR || data)``. PCR3 and PCR4 are extended once, with the UTF-8 text of the parent's
IAM role ARN and instance ID (AWS's published recipe; the PCR4 of every real document under
``test-vectors/`` equals this computed from the instance ID in its module_id). Key policies are
written from these numbers, so computing them here, rather than copying them by hand from consoles,
removes one place where a typo silently locks everyone out or lets the wrong enclave in.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from nitro_llm.attestation.document import PCR_COUNT_LIMIT, PCR_LENGTH
from nitro_llm.attestation.errors import MeasurementError

ZERO_PCR = bytes(PCR_LENGTH)


def extend(pcr: bytes, data: bytes) -> bytes:
    """One Nitro PCR extension: ``SHA384(pcr || data)``."""
    if len(pcr) != PCR_LENGTH:
        raise MeasurementError(f"a PCR is {PCR_LENGTH} bytes, got {len(pcr)}")
    return hashlib.sha384(pcr + data).digest()


def pcr3_for_role_arn(role_arn: str) -> bytes:
    """PCR3: the IAM role ARN of the parent instance, extended into a zero register."""
    return extend(ZERO_PCR, role_arn.encode("utf-8"))


def pcr4_for_instance_id(instance_id: str) -> bytes:
    """PCR4: the parent instance's ID (``i-...``), extended into a zero register."""
    return extend(ZERO_PCR, instance_id.encode("utf-8"))


def parse_eif_measurements(text: str | bytes) -> dict[int, bytes]:
    """Read the JSON ``nitro-cli build-enclave`` / ``describe-eif`` print.

    The shape is ``{"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": hex, "PCR1": hex,
    "PCR2": hex, optionally "PCR8": hex}, ...}``. Lines of progress text before the JSON are skipped.
    """
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    data = _first_json_object(text)
    measurements = data.get("Measurements") if isinstance(data, dict) else None
    if not isinstance(measurements, dict):
        raise MeasurementError(
            'no "Measurements" object: expected nitro-cli build-enclave / describe-eif output'
        )
    algorithm = measurements.get("HashAlgorithm")
    if not isinstance(algorithm, str) or not algorithm.lower().startswith("sha384"):
        raise MeasurementError(f"HashAlgorithm must be Sha384, got {str(algorithm)[:40]!r}")
    pcrs: dict[int, bytes] = {}
    for key, value in measurements.items():
        if key == "HashAlgorithm":
            continue
        if not (key.startswith("PCR") and key[3:].isdigit() and int(key[3:]) < PCR_COUNT_LIMIT):
            raise MeasurementError(f"unexpected measurement {key[:20]!r}")
        if not isinstance(value, str):
            raise MeasurementError(f"{key} must be a hex string")
        try:
            raw = bytes.fromhex(value)
        except ValueError:
            raise MeasurementError(f"{key} is not hexadecimal") from None
        if len(raw) != PCR_LENGTH:
            raise MeasurementError(f"{key} must be {PCR_LENGTH} bytes, got {len(raw)}")
        pcrs[int(key[3:])] = raw
    if not {0, 1, 2} <= pcrs.keys():
        raise MeasurementError("PCR0, PCR1 and PCR2 must all be present")
    return dict(sorted(pcrs.items()))


def load_eif_measurements(path: str | Path) -> dict[int, bytes]:
    try:
        text = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError as exc:
        raise MeasurementError(f"cannot read measurements file {path} ({exc.strerror})") from None
    return parse_eif_measurements(text)


def _first_json_object(text: str) -> object:
    start = text.find("{")
    if start < 0:
        raise MeasurementError("no JSON object in the measurements text")
    try:
        value, _ = json.JSONDecoder().raw_decode(text, start)
    except json.JSONDecodeError as exc:
        raise MeasurementError(f"measurements are not valid JSON (line {exc.lineno})") from None
    return value
