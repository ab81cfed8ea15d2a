"""The fleet key against the real KMS emulator (in-process HTTP server, boto3, real CMS and policy).

Replicas are in-process enclave servers with the echo engine, each with its own emulated NSM and
its own KMS client built from the enclave role's credentials (as the gateway hands them over): what
a replica obtains is decided by the emulator's policy evaluation of its attestation document.
"""

from __future__ import annotations

import json
import socket
from dataclasses import dataclass
from typing import Any

import pytest

from nitro_llm.client.attested_verify import new_nonce, verify_attestation
from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.fleet_key import FleetAttestedHandler
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.fleet import operator
from nitro_llm.fleet.key_file import FleetKeyFile, FleetKeyGeneration
from nitro_llm.fleet.key_policy import build_fleet_key_policy
from nitro_llm.kms.client import make_kms_client
from nitro_llm.kms.cms import open_enveloped_data
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.attested import ResponseOpener, SessionDescriptor, seal_request
from nitro_llm.protocol.attested_wire import attest_frame, read_attestation_frame
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsHeader, new_id
from nitro_llm.protocol.kms_envelope import seal_request as kms_seal
from nitro_llm.transport import connect, listen
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.kms_emulator import EmulatorConfig, EmulatorServer
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

REGION = "us-east-1"
PCRS = {0: b"\x11" * 48, 1: b"\x12" * 48, 2: b"\x13" * 48}
OTHER_PCRS = {0: b"\x21" * 48, 1: b"\x12" * 48, 2: b"\x13" * 48}  # one changed byte of code or config
MODEL_DIGEST = "ab" * 32
CONFIG_DIGEST = "cd" * 32


@dataclass
class Kms:
    server: EmulatorServer
    credentials: dict[str, Any]
    fleet_arn: str

    def client(self, who: str) -> Any:
        return make_kms_client(self.server.url, self.credentials[who], REGION)

    def set_policy(self, *, retired: tuple[str, ...] = ()) -> None:
        policy = build_fleet_key_policy(
            self.credentials["account"],
            self.credentials["admin"]["arn"],
            self.credentials["enclave_role"]["arn"],
            {i: v.hex() for i, v in PCRS.items()},
            retired_ids=retired,
        )
        self.client("admin").put_key_policy(
            KeyId=self.fleet_arn, PolicyName="default", Policy=json.dumps(policy)
        )


@pytest.fixture
def dev_ca(tmp_path) -> DevCA:
    return DevCA.load_or_create(tmp_path / "dev-ca")


@pytest.fixture
def kms(tmp_path, dev_ca):
    config = EmulatorConfig(state_dir=tmp_path / "kms", region=REGION, trust_roots=[dev_ca.root_certificate])
    with EmulatorServer(config).start() as server:
        credentials = json.loads((config.state_dir / "credentials.json").read_text())
        admin = make_kms_client(server.url, credentials["admin"], REGION)
        arn = admin.create_key(Description="fleet key wrapper")["KeyMetadata"]["Arn"]
        k = Kms(server, credentials, arn)
        k.set_policy()
        yield k


@dataclass
class Replica:
    address: str
    server: EnclaveServer
    fleet: FleetAttestedHandler

    def call(self, frame: dict) -> list[dict]:
        with connect(self.address, 10.0) as sock:
            sock.sendall(encode_frame(frame))
            sock.shutdown(socket.SHUT_WR)
            out = []
            while (reply := read_frame(sock)) is not None:
                out.append(reply)
            return out

    def install(self, keys: FleetKeyFile) -> dict:
        (reply,) = self.call(keys.frame())
        return reply

    def attest(self, nonce: bytes) -> tuple[bytes, bytes]:
        (reply,) = self.call(attest_frame(nonce))
        assert reply["t"] == "attestation", reply
        return read_attestation_frame(reply)

    def pong(self) -> dict:
        (reply,) = self.call(frame_kinds.ping_frame())
        return reply


@pytest.fixture
def replicas(tmp_path, dev_ca, kms):
    started: list[Replica] = []

    def start(pcrs: dict[int, bytes] = PCRS, *, arn: str | None = None) -> Replica:
        nsm = open_emulated_nsm(ca=dev_ca, pcrs=pcrs)

        def factory(creds: frame_kinds.Credentials) -> Any:
            return make_kms_client(kms.server.url, creds.to_boto(), REGION, single_attempt=True)

        release = KeyRelease(nsm=nsm, kms_client_factory=factory, open_envelope=open_enveloped_data)
        fleet = FleetAttestedHandler(
            nsm,
            release,
            kms_key_arn=arn or kms.fleet_arn,
            model_digest=MODEL_DIGEST,
            config_digest=CONFIG_DIGEST,
        )
        server = EnclaveServer(
            engine=EchoEngine(),
            key_release=release,
            config=EnclaveConfig(engine="echo", fleet_kms_key=arn or kms.fleet_arn),
            io_timeout=5.0,
            attested=fleet,
        )
        address = f"unix:{tmp_path / f'replica-{len(started)}.sock'}"
        server.start(listen(address))
        replica = Replica(address, server, fleet)
        started.append(replica)
        role = kms.credentials["enclave_role"]
        creds = frame_kinds.Credentials(
            role["access_key_id"], role["secret_access_key"], role.get("session_token")
        )
        assert replica.call(frame_kinds.credentials_frame(creds)) == [{"t": "ok"}]
        return replica

    yield start
    for replica in started:
        replica.server.stop()


@pytest.fixture
def policy(dev_ca) -> ClientPolicy:
    return ClientPolicy(
        expected_pcrs=PCRS,
        trust_root=TrustRoot(pem=dev_ca.root_pem.decode("ascii")),
        unsafe_dev_root=True,
        model_digest=MODEL_DIGEST,
    )


def verified(replica: Replica, policy: ClientPolicy) -> SessionDescriptor:
    nonce = new_nonce()
    document, descriptor = replica.attest(nonce)
    return verify_attestation(document, descriptor, nonce, policy).descriptor


def ask(replica: Replica, descriptor: SessionDescriptor, text: str) -> str:
    """Seal to a verified descriptor, send to ``replica``, open the answer (or raise its error)."""
    sealed = seal_request(
        descriptor, {"messages": [{"role": "user", "content": text}], "max_tokens": 32, "temperature": 0.0}
    )
    replies = replica.call(frame_kinds.infer_frame(sealed.envelope.to_cbor()))
    if replies[-1]["t"] == "error":
        raise frame_kinds.read_error(replies[-1])
    opener = ResponseOpener(sealed.response_key, sealed.request_id)
    answer = "".join(opener.open(frame)["text"] for frame in replies)
    opener.finish()
    return answer


def error_code(replies: list[dict]) -> str:
    assert replies[-1]["t"] == "error", replies
    return replies[-1]["code"]


def test_two_replicas_attest_the_same_fleet_key_and_answer_each_other_s_clients(
    tmp_path, kms, replicas, policy
):
    keys = operator.create(tmp_path / "fleet.json", kms.client("admin"), kms.fleet_arn)
    a, b = replicas(), replicas()
    assert a.install(keys) == {"t": "ok"} and b.install(keys) == {"t": "ok"}

    from_a, from_b = verified(a, policy), verified(b, policy)
    assert from_a.hpke_public_key == from_b.hpke_public_key
    assert from_a.digest() == from_b.digest()  # the very descriptor every replica's document vouches for
    assert ask(b, from_a, "verified on a, answered by b") == "verified on a, answered by b"
    assert ask(a, from_b, "and the other way round") == "and the other way round"
    assert a.pong()["fleet_key"]["current"] == b.pong()["fleet_key"]["current"] == keys.current.id


def test_an_enclave_with_other_pcrs_cannot_obtain_the_fleet_key_and_serves_nothing(
    tmp_path, kms, replicas, policy
):
    keys = operator.create(tmp_path / "fleet.json", kms.client("admin"), kms.fleet_arn)
    good, other = replicas(), replicas(OTHER_PCRS)
    assert good.install(keys) == {"t": "ok"}
    assert error_code(other.call(keys.frame())) == "kms_denied"  # the emulator's policy said no
    assert other.pong()["fleet_key"] == {
        "state": "refused", "current": None, "generation": None, "previous": None, "error": "kms_denied"
    }  # fmt: skip

    # It serves nothing: no attestation, no attested request, not even a kms-protocol request.
    assert error_code(other.call(attest_frame(new_nonce()))) == "fleet_key_unavailable"
    sealed = seal_request(
        verified(good, policy),
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0.0},
    )
    assert (
        error_code(other.call(frame_kinds.infer_frame(sealed.envelope.to_cbor()))) == "fleet_key_unavailable"
    )
    header = KmsHeader.new(model="default", conversation_id=new_id(), key_id="alias/any")
    kms_envelope = kms_seal(
        b"\x00" * 32,
        header,
        {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0.0},
        edk=b"e",
    )
    assert error_code(other.call(frame_kinds.infer_frame(kms_envelope.to_cbor()))) == "fleet_key_unavailable"


def test_the_parent_and_the_operator_cannot_open_the_fleet_key(tmp_path, kms):
    """The enclave role without attestation (the parent holds the same credentials), the admin who
    created it, and a data owner: KMS refuses each; the client role cannot even mint one."""
    from botocore.exceptions import ClientError

    keys = operator.create(tmp_path / "fleet.json", kms.client("admin"), kms.fleet_arn)
    for who in ("enclave_role", "admin", "client"):
        with pytest.raises(ClientError) as info:
            kms.client(who).decrypt(
                CiphertextBlob=keys.current.wrapped, EncryptionContext=keys.current.encryption_context()
            )
        assert info.value.response["Error"]["Code"] == "AccessDeniedException", who
    with pytest.raises(ClientError):
        kms.client("client").generate_data_key(
            KeyId=kms.fleet_arn, KeySpec="AES_256", EncryptionContext=keys.current.encryption_context()
        )


def test_rotation_accepts_both_keys_during_the_overlap_and_only_the_new_one_after(
    tmp_path, kms, replicas, policy
):
    path = tmp_path / "fleet.json"
    v1 = operator.create(path, kms.client("admin"), kms.fleet_arn)
    a, b = replicas(), replicas()
    for replica in (a, b):
        assert replica.install(v1) == {"t": "ok"}
    old = verified(a, policy)

    v2 = operator.rotate(path, kms.client("admin"))
    assert (v2.current.generation, v2.previous) == (2, v1.current)
    for replica in (a, b):
        assert replica.install(v2) == {"t": "ok"}
    new = verified(b, policy)
    assert new.digest() != old.digest() and verified(a, policy).digest() == new.digest()  # new is attested
    for replica in (a, b):  # overlap: a client still holding the old key is answered, as is a new one
        assert ask(replica, old, "sealed to generation 1") == "sealed to generation 1"
        assert ask(replica, new, "sealed to generation 2") == "sealed to generation 2"

    v3, retired_id = operator.retire(path)
    assert retired_id == v1.current.id and v3.previous is None
    for replica in (a, b):
        assert replica.install(v3) == {"t": "ok"}
        with pytest.raises(Exception) as info:
            ask(replica, old, "sealed to the retired key")
        assert getattr(info.value, "code", None) == "attested_descriptor_unknown"  # the client re-attests
        assert ask(replica, new, "still fine") == "still fine"

    # The retired id in the key policy: a replica started later cannot obtain it even if handed it.
    kms.set_policy(retired=(retired_id,))
    late = replicas()
    assert error_code(late.call(v2.frame())) == "kms_denied"
    assert late.install(v3) == {"t": "ok"}


def test_a_running_replica_never_goes_back_to_an_older_generation(tmp_path, kms, replicas):
    path = tmp_path / "fleet.json"
    v1 = operator.create(path, kms.client("admin"), kms.fleet_arn)
    replica = replicas()
    assert replica.install(v1) == {"t": "ok"}
    v2 = operator.rotate(path, kms.client("admin"))
    assert replica.install(v2) == {"t": "ok"}
    assert error_code(replica.call(v1.frame())) == "fleet_key_refused"  # the parent replaying the old file
    status = replica.pong()["fleet_key"]
    assert (status["state"], status["current"], status["error"]) == (
        "ready",
        v2.current.id,
        "fleet_key_refused",
    )


def test_a_secret_wrapped_by_another_kms_key_is_refused(tmp_path, kms, replicas):
    """A hostile parent's own KMS key, whose policy lets any attested enclave decrypt: the enclave names
    the measured key in Decrypt (KMS refuses the other key's blob), or refuses the file outright.
    (That it also checks which key answered is tested against a KMS that ignores KeyId, in the unit tests.)"""
    admin = kms.client("admin")
    rogue_arn = admin.create_key(Description="rogue")["KeyMetadata"]["Arn"]  # default policy: the account
    _, rogue = operator.new_generation(admin, rogue_arn, 1)
    replica = replicas()
    forged = FleetKeyFile(kms_key_arn=kms.fleet_arn, current=rogue)  # claims the pinned key
    assert error_code(replica.call(forged.frame())) == "kms_denied"  # IncorrectKeyException
    assert error_code(replica.call(FleetKeyFile(rogue_arn, rogue).frame())) == "fleet_key_refused"
    assert replica.pong()["fleet_key"]["state"] == "refused"


def test_a_generation_relabelled_by_the_parent_does_not_open(tmp_path, kms, replicas):
    """The id and generation are in the encryption context: the parent cannot renumber a blob."""
    v1 = operator.create(tmp_path / "fleet.json", kms.client("admin"), kms.fleet_arn)
    relabelled = FleetKeyFile(
        kms.fleet_arn, FleetKeyGeneration(v1.current.id, 7, v1.current.wrapped, v1.current.created)
    )
    replica = replicas()
    assert error_code(replica.call(relabelled.frame())) == "kms_denied"


def test_fleet_keys_frames_are_read_strictly(tmp_path, kms, replicas):
    v1 = operator.create(tmp_path / "fleet.json", kms.client("admin"), kms.fleet_arn)
    replica = replicas()
    bad = [
        {**v1.frame(), "extra": 1},
        {**v1.frame(), "kms_key_arn": "alias/fleet"},
        {**v1.frame(), "current": {**v1.current.to_frame(), "generation": 0}},
        {**v1.frame(), "current": {**v1.current.to_frame(), "id": "X" * 16}},
        {**v1.frame(), "previous": v1.current.to_frame()},  # previous must be older than current
    ]
    for frame in bad:
        assert error_code(replica.call(frame)) == "bad_frame", frame
    assert replica.install(v1) == {"t": "ok"}  # and the replica still works after each


def test_a_replica_without_a_fleet_key_file_waits_and_says_so(replicas):
    replica = replicas()
    assert replica.pong()["fleet_key"]["state"] == "missing"
    assert error_code(replica.call(attest_frame(new_nonce()))) == "fleet_key_unavailable"
