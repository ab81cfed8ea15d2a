"""PCR arithmetic and nitro-cli measurement files."""

from __future__ import annotations

import json

import pytest

from nitro_llm.attestation import MeasurementError
from nitro_llm.attestation.pcr import (
    extend,
    load_eif_measurements,
    parse_eif_measurements,
    pcr3_for_role_arn,
    pcr4_for_instance_id,
)

PCR0 = "7fb5c55bc2ecbb68ed99a13d7122abfc0666b926a79d5379bc58b9445c84217f59cfdd36c08b2c79552928702efe23e4"
PCR1 = "235c9e6050abf6b993c915505f3220e2d82b51aff830ad14cbecc2eec1bf0b4ae749d311c663f464cde9f718acca5286"
PCR2 = "0f0ac32c300289e872e6ac4d19b0b5ac4a9b020c98295643ff3978610750ce6a86f7edff24e3c0a4a445f2ff8a9ea79d"
PCR8 = "70da58334a884328944cd806127c7784677ab60a154249fd21546a217299ccfa1ebfe4fa96a163bf41d3bcfaebe68f6f"


def test_pcr3_matches_the_value_aws_documents_for_its_example_role():
    # AWS Nitro Enclaves user guide, "Where to get an enclave's measurements", PCR3 example
    expected = (
        "78fce75db17cd4e0a3fb8dad3ad128ca5e77edbb2b2c7f75329dccd99aa5f6ef4fc1f1a452e315b9e98f9e312e6921e6"
    )
    assert pcr3_for_role_arn("arn:aws:iam::123456789012:role/Webserver").hex() == expected


def test_pcr4_is_the_instance_id_text_extended_not_its_hash():
    value = pcr4_for_instance_id("i-1234567890abcdef0")
    assert value == extend(bytes(48), b"i-1234567890abcdef0")
    assert value != extend(bytes(48), __import__("hashlib").sha384(b"i-1234567890abcdef0").digest())


def test_extend_refuses_a_register_of_the_wrong_size():
    with pytest.raises(MeasurementError):
        extend(bytes(32), b"x")


def test_build_enclave_output_is_read():
    text = json.dumps(
        {"Measurements": {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2}},
        indent=2,
    )
    progress = "Start building the Enclave Image...\nEnclave Image successfully created.\n"
    assert parse_eif_measurements(progress + text) == {
        0: bytes.fromhex(PCR0),
        1: bytes.fromhex(PCR1),
        2: bytes.fromhex(PCR2),
    }


def test_describe_eif_output_with_signature_pcr8_is_read(tmp_path):
    describe = {
        "EifVersion": 4,
        "Measurements": {
            "HashAlgorithm": "Sha384 { ... }",
            "PCR0": PCR0,
            "PCR1": PCR1,
            "PCR2": PCR2,
            "PCR8": PCR8,
        },
        "IsSigned": True,
        "CheckCRC": True,
    }
    path = tmp_path / "describe.json"
    path.write_text(json.dumps(describe))
    assert load_eif_measurements(path)[8] == bytes.fromhex(PCR8)


@pytest.mark.parametrize(
    ("measurements", "message"),
    [
        ({"HashAlgorithm": "Sha256 { ... }", "PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2}, "Sha384"),
        ({"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0[:-2], "PCR1": PCR1, "PCR2": PCR2}, "48 bytes"),
        ({"HashAlgorithm": "Sha384 { ... }", "PCR0": "zz" * 48, "PCR1": PCR1, "PCR2": PCR2}, "hexadecimal"),
        ({"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1}, "PCR2"),
        (
            {"HashAlgorithm": "Sha384 { ... }", "PCR0": PCR0, "PCR1": PCR1, "PCR2": PCR2, "PCR99": PCR0},
            "unexpected",
        ),
    ],
)
def test_malformed_measurements_are_typed_errors(measurements, message):
    with pytest.raises(MeasurementError, match=message):
        parse_eif_measurements(json.dumps({"Measurements": measurements}))


def test_not_json_or_missing_file_is_a_typed_error(tmp_path):
    with pytest.raises(MeasurementError, match="no JSON"):
        parse_eif_measurements("nitro-cli: error")
    with pytest.raises(MeasurementError, match="Measurements"):
        parse_eif_measurements('{"EnclaveID": "i-1"}')
    with pytest.raises(MeasurementError, match="cannot read"):
        load_eif_measurements(tmp_path / "absent.json")
