"""The fleet key's pure parts: the file and its operator steps, the derivation every replica repeats,
and the enclave's checks of what KMS (or something posing as it) released."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field

import pytest

from nitro_llm.enclave.fleet_key import FleetAttestedHandler
from nitro_llm.enclave.key_release import Released
from nitro_llm.fleet.errors import FleetKeyError, FleetKeyFileError, FleetKeyRefusedError
from nitro_llm.fleet.key_file import FleetKeyFile, FleetKeyGeneration
from nitro_llm.protocol.attested import seal_request
from nitro_llm.protocol.attested_wire import MLKEM768_X25519, X25519
from nitro_llm.protocol.hpke_suite import HpkeKeyPair

ARN = "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"
OTHER_ARN = "arn:aws:kms:us-east-1:444455556666:key/ffffffff-12ab-34cd-56ef-1234567890ab"


def generation(n: int) -> FleetKeyGeneration:
    return FleetKeyGeneration(f"{n:016x}", n, b"blob-%d" % n, "2025-01-01T00:00:00+00:00")


def test_the_file_round_trips_and_rotation_goes_through_an_overlap(tmp_path):
    path = tmp_path / "fleet.json"
    v1 = FleetKeyFile(ARN, generation(1))
    v1.save(path)
    assert FleetKeyFile.load(path) == v1
    v2 = v1.rotated(generation(2))
    assert (v2.current, v2.previous, v2.ids()) == (
        generation(2),
        generation(1),
        (generation(2).id, generation(1).id),
    )
    with pytest.raises(FleetKeyFileError):
        v2.rotated(generation(3))  # one overlap at a time: retire first
    with pytest.raises(FleetKeyFileError):
        v1.rotated(generation(1))  # never backwards or sideways
    assert v2.retired() == FleetKeyFile(ARN, generation(2))
    with pytest.raises(FleetKeyFileError):
        v1.retired()


@pytest.mark.parametrize(
    "edit",
    [
        lambda d: d.update(format="nitro-llm-fleet-key/2"),
        lambda d: d.update(kms_key_arn="alias/nitro-llm-local-fleet"),  # an alias can be repointed
        lambda d: d.update(extra=1),
        lambda d: d["current"].update(wrapped="not base64!"),
        lambda d: d["current"].update(generation=True),
        lambda d: d.update(previous=dict(d["current"])),  # previous must be older
    ],
)
def test_a_damaged_file_is_refused_with_a_typed_error(tmp_path, edit):
    path = tmp_path / "fleet.json"
    FleetKeyFile(ARN, generation(1)).save(path)
    data = json.loads(path.read_text())
    edit(data)
    path.write_text(json.dumps(data))
    with pytest.raises(FleetKeyFileError):
        FleetKeyFile.load(path)


def test_the_encryption_context_names_purpose_id_and_generation():
    assert generation(3).encryption_context() == {
        "nitro-llm:purpose": "fleet-key",
        "nitro-llm:fleet-key-id": generation(3).id,
        "nitro-llm:fleet-key-generation": "3",
    }


@pytest.mark.parametrize("suite", [X25519, MLKEM768_X25519])
def test_the_same_secret_derives_the_same_key_pair_and_another_context_another(suite):
    secret = os.urandom(32)
    one, again = (
        HpkeKeyPair.derive(suite, secret, context=b"a/1"),
        HpkeKeyPair.derive(suite, secret, context=b"a/1"),
    )
    assert one.public_key == again.public_key
    assert HpkeKeyPair.derive(suite, secret, context=b"a/2").public_key != one.public_key
    assert HpkeKeyPair.derive(suite, os.urandom(32), context=b"a/1").public_key != one.public_key
    with pytest.raises(ValueError):
        HpkeKeyPair.derive(suite, secret[:16], context=b"a/1")


@dataclass
class StubKms:
    """Stands in for KeyRelease: answers whatever it is told to, as a broken or hostile KMS might."""

    key_id: str = ARN
    secret: bytes = field(default_factory=lambda: os.urandom(32))
    calls: list[dict] = field(default_factory=list)

    def release(self, ciphertext_blob, encryption_context, *, request_id, kms=None, key_id=None) -> Released:
        self.calls.append({"blob": ciphertext_blob, "context": encryption_context, "key_id": key_id})
        return Released(plaintext=self.secret, key_id=self.key_id)


class NoNsm:
    def attest(self, user_data=None, nonce=None, public_key=None) -> bytes:
        raise AssertionError("not used here")


def handler(kms: StubKms) -> FleetAttestedHandler:
    return FleetAttestedHandler(
        NoNsm(), kms, kms_key_arn=ARN, model_digest="ab" * 32, config_digest="cd" * 32
    )


def test_two_handlers_given_the_same_secret_open_each_other_s_requests():
    kms = StubKms()
    a, b = handler(kms), handler(kms)
    keys = FleetKeyFile(ARN, generation(1))
    a.install(keys.frame())
    b.install(keys.frame())
    assert a.descriptor_hashes() == b.descriptor_hashes()
    assert kms.calls[0] == {"blob": b"blob-1", "context": generation(1).encryption_context(), "key_id": ARN}


def test_a_secret_another_kms_key_released_is_refused_even_if_kms_said_yes():
    kms = StubKms(key_id=OTHER_ARN)
    fleet = handler(kms)
    with pytest.raises(FleetKeyRefusedError):
        fleet.install(FleetKeyFile(ARN, generation(1)).frame())
    assert fleet.status()["state"] == "refused"


def test_a_secret_of_the_wrong_size_is_refused():
    with pytest.raises(FleetKeyRefusedError):
        handler(StubKms(secret=os.urandom(16))).install(FleetKeyFile(ARN, generation(1)).frame())


def test_a_held_generation_is_not_asked_for_again_and_a_retired_one_no_longer_opens():
    from nitro_llm.enclave.freshness import FreshnessGuard
    from nitro_llm.protocol.attested_errors import UnknownDescriptorError

    kms = StubKms()
    fleet = handler(kms)
    v1 = FleetKeyFile(ARN, generation(1))
    fleet.install(v1.frame())
    fleet.install(v1.frame())
    assert len(kms.calls) == 1  # the second install found it held
    old = fleet._current.sessions[X25519].descriptor  # type: ignore[union-attr]
    request = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 4, "temperature": 0.0}
    kms.secret = os.urandom(32)  # the next generation's secret
    fleet.install(v1.rotated(generation(2)).frame())
    guard = FreshnessGuard()
    fleet.open(seal_request(old, request).envelope.to_cbor(), guard)  # overlap: still opened
    fleet.install(v1.rotated(generation(2)).retired().frame())
    with pytest.raises(UnknownDescriptorError):
        fleet.open(seal_request(old, request).envelope.to_cbor(), guard)
    with pytest.raises(FleetKeyError):
        fleet.install(v1.frame())  # rollback


def test_a_conversation_gets_a_cache_key_and_loses_it_with_its_generation():
    """The per-conversation KV cache (enclave/conversation_keys.py) on a fleet replica: a turn that
    carries a conversation secret gets a key; retiring the generation it was sealed to evicts it."""
    from nitro_llm.enclave.freshness import FreshnessGuard
    from nitro_llm.protocol.attested import new_conversation

    kms, evicted = StubKms(), []
    fleet = handler(kms)
    fleet.evict_with(evicted.append)
    v1 = FleetKeyFile(ARN, generation(1))
    fleet.install(v1.frame())
    descriptor = fleet._current.sessions[X25519].descriptor  # type: ignore[union-attr]
    request = {"messages": [{"role": "user", "content": "q"}], "max_tokens": 4, "temperature": 0.0}
    conversation = new_conversation()
    guard = FreshnessGuard()
    first = fleet.open(seal_request(descriptor, request, conversation=conversation).envelope.to_cbor(), guard)
    again = fleet.open(seal_request(descriptor, request, conversation=conversation).envelope.to_cbor(), guard)
    none = fleet.open(seal_request(descriptor, request).envelope.to_cbor(), guard)
    assert first.cache_key is not None and first.cache_key == again.cache_key and none.cache_key is None
    assert fleet.conversations() == 1
    kms.secret = os.urandom(32)
    fleet.install(v1.rotated(generation(2)).frame())
    assert evicted == []  # overlap: generation 1 still held
    fleet.install(v1.rotated(generation(2)).retired().frame())
    assert evicted == [first.cache_key] and fleet.conversations() == 0
