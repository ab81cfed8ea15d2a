"""What a policy accepts as a PCR index, and how it treats a long document age. ``str.isdigit()`` and
``int()`` take any Unicode digit ("٠" is Arabic-Indic zero, "０" fullwidth zero): a PCR index is
ASCII digits only. A maximum age over an hour is allowed but called out, like the other risks."""

import json
import logging

import pytest

from nitro_llm.attestation.errors import PolicyError
from nitro_llm.attestation.policy import parse_pcr_expectation
from nitro_llm.client.policy import ClientPolicy, PolicyFileError

PCR0 = "ab" * 48
UNICODE_ZEROS = ["٠", "０", "۰", "߀", "𝟎"]


def _doc(**over):
    doc = {"format": "nitro-llm-policy/1", "trust_root": "aws-nitro", "expected_pcrs": {"0": PCR0}}
    doc.update(over)
    return doc


@pytest.mark.parametrize("digit", UNICODE_ZEROS)
def test_a_client_policy_refuses_unicode_digits_as_a_pcr_index(digit):
    assert digit.isdigit() and int(digit) == 0  # what made them pass before
    with pytest.raises(PolicyFileError, match="is not a PCR index"):
        ClientPolicy.from_dict(_doc(expected_pcrs={digit: PCR0}))
    with pytest.raises(PolicyFileError, match="is not a PCR index"):
        ClientPolicy.from_dict(_doc(expected_pcrs={"0": PCR0, "1" + digit: PCR0}))


@pytest.mark.parametrize("digit", UNICODE_ZEROS)
def test_the_command_line_refuses_unicode_digits_as_a_pcr_index(digit):
    with pytest.raises(PolicyError, match="N=HEX"):
        parse_pcr_expectation(f"{digit}={PCR0}")


def test_ascii_indexes_still_parse():
    assert parse_pcr_expectation(f" 8 ={PCR0}") == (8, bytes.fromhex(PCR0))
    assert ClientPolicy.from_dict(_doc(expected_pcrs={"0": PCR0, "08": PCR0})).expected_pcrs.keys() == {0, 8}
    with pytest.raises(PolicyError):
        parse_pcr_expectation("9" * 5000 + "=" + PCR0)  # no int() of a huge string, just refused


def test_a_max_age_over_an_hour_is_called_out(tmp_path, caplog):
    assert ClientPolicy.from_dict(_doc(max_document_age_seconds=3600)).unsafe_reasons() == []
    path = tmp_path / "policy.json"
    path.write_text(json.dumps(_doc(max_document_age_seconds=24 * 3600)))
    with caplog.at_level(logging.WARNING):
        policy = ClientPolicy.load(path)
    (reason,) = policy.unsafe_reasons()
    assert "86400 s" in reason and "replayed" in reason
    assert any("86400 s" in record.getMessage() for record in caplog.records)  # logged when loaded
