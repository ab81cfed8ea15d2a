"""Reading and saving nitro-cli's measurements."""

from __future__ import annotations

import hashlib
import json

import pytest

from nitro_llm.attestation.errors import AttestationError
from nitro_llm.deploy.errors import MeasurementsError
from nitro_llm.deploy.measurements import load_measurements, parse_measurements


def pcr(label: str) -> str:
    return hashlib.sha384(label.encode()).hexdigest()


def nitro_cli_output(signed: bool = False) -> str:
    measurements = {
        "HashAlgorithm": "Sha384 { ... }",
        "PCR0": pcr("0").upper(),
        "PCR1": pcr("1"),
        "PCR2": pcr("2"),
    }
    if signed:
        measurements["PCR8"] = pcr("8")
    return "Start building the Enclave Image...\nUsing the locally available Docker image...\n" + json.dumps(
        {"Measurements": measurements}, indent=2
    )


def test_parses_nitro_cli_output_after_progress_lines():
    m = parse_measurements(nitro_cli_output())
    assert m.pcrs == {0: pcr("0"), 1: pcr("1"), 2: pcr("2")}  # lower-cased
    assert not m.signed
    assert m.policy_pcrs() == m.pcrs


def test_signed_eif_adds_pcr8_to_the_policy():
    m = parse_measurements(nitro_cli_output(signed=True))
    assert m.signed and m.policy_pcrs()[8] == pcr("8")


def test_saved_file_keeps_nitro_cli_shape_and_round_trips(tmp_path):
    m = parse_measurements(nitro_cli_output(signed=True))
    path = tmp_path / "sub" / "measurements.json"
    m.save(path)
    data = json.loads(path.read_text())
    assert set(data) == {"Measurements"}
    assert data["Measurements"]["PCR0"] == pcr("0")
    assert data["Measurements"]["HashAlgorithm"].startswith("Sha384")
    assert load_measurements(path) == m


@pytest.mark.parametrize(
    "mutate",
    [
        lambda d: d["Measurements"].pop("PCR1"),
        lambda d: d["Measurements"].update(PCR2=pcr("2")[:-2]),
        lambda d: d["Measurements"].update(PCR0="zz" * 48),
        lambda d: d["Measurements"].update(HashAlgorithm="Sha256"),
    ],
)
def test_malformed_measurements_are_refused(mutate):
    data = json.loads(nitro_cli_output().split("\n", 2)[2])
    mutate(data)
    with pytest.raises(AttestationError):
        parse_measurements(json.dumps(data))


def test_debug_mode_zero_pcrs_are_refused():
    data = json.loads(nitro_cli_output().split("\n", 2)[2])
    data["Measurements"]["PCR0"] = "0" * 96
    with pytest.raises(MeasurementsError) as info:
        parse_measurements(json.dumps(data))
    assert "debug" in info.value.message


def test_missing_file_says_how_to_make_it(tmp_path):
    with pytest.raises(MeasurementsError) as info:
        load_measurements(tmp_path / "none.json")
    assert "build-eif" in info.value.hint
