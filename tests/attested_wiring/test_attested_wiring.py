"""The attested protocol through the real enclave server and the real gateway app (echo engine)."""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import subprocess
import sys
import time

import cbor2
import httpx
import pytest
from typer.testing import CliRunner
from wire_tools import RecordingTransport, decode_frames

from nitro_llm.attestation import DebugModeError, PcrMismatchError, UntrustedRootError, parse_document
from nitro_llm.cli.main import full_app
from nitro_llm.client.attested_verify import new_nonce, verify_attestation
from nitro_llm.client.protocol_choice import choose_protocol, default_policy_path
from nitro_llm.enclave.attested_handler import config_digest
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.kms.cms import open_enveloped_data
from nitro_llm.protocol.attested import decode_attestation_bundle, seal_request
from nitro_llm.protocol.errors import ChunkGapError, ChunkReplayError, ResponseTruncatedError
from nitro_llm.protocol.frame_codec import encode_frame
from nitro_llm.protocol.frame_kinds import infer_frame
from nitro_llm.protocol.kms_envelope import KmsHeader
from nitro_llm.protocol.kms_envelope import seal_request as kms_seal
from nitro_llm.transport import close_listener, listen
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

from .conftest import MODEL_DIGEST, PCRS

cli_app = full_app()

CANARY = "CANARY-wired-5cd1e0"


def _ask(client, text: str, **sampling) -> list:
    return list(client.stream([{"role": "user", "content": text}], max_tokens=64, **sampling))


def _attest(gateway, nonce: bytes, suite: str = "x25519") -> httpx.Response:
    return gateway.get("/v1/attestation", params={"nonce": nonce.hex(), "suite": suite})


def _recording_client(deployment, tamper=None) -> tuple[httpx.Client, RecordingTransport]:
    recorder = RecordingTransport(deployment.gateway._transport, tamper)
    return httpx.Client(transport=recorder, base_url="http://gateway.test"), recorder


# --- the happy path ------------------------------------------------------------------------


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_question_sealed_to_the_verified_enclave_is_answered(deploy, suite):
    d = deploy()
    http, recorder = _recording_client(d)
    client = d.client(suite=suite, http=http)
    chunks = _ask(client, f"my record is {CANARY} ok")
    assert "".join(c.text for c in chunks) == f"my record is {CANARY} ok"
    assert chunks[-1].final and chunks[-1].finish_reason == "stop"
    assert [c.final for c in chunks].count(True) == 1
    assert recorder.paths() == [("GET", "/v1/attestation"), ("POST", "/v1/infer")]
    assert all(CANARY.encode() not in body for _, _, body in recorder.sent)
    _ask(client, "second turn")
    assert recorder.paths().count(("GET", "/v1/attestation")) == 1  # verified once, cached
    stats = d.enclave.stats()
    assert stats["requests"] == 2 and stats["answered"] == 2 and stats["kms_decrypt_calls"] == 0
    panel = client.describe()
    assert panel["verified"] is True and panel["hpke_suite"] == suite
    assert panel["model_digest"] == MODEL_DIGEST
    assert panel["config_digest"] == config_digest(EnclaveConfig(engine="echo").measured())


def test_attestation_endpoint_returns_a_fresh_bound_bundle(deploy):
    d = deploy()
    nonce = new_nonce()
    r = _attest(d.gateway, nonce)
    assert r.status_code == 200 and r.headers["content-type"] == "application/cbor"
    document, descriptor = decode_attestation_bundle(r.content)
    doc = parse_document(document)
    assert doc.nonce == nonce and doc.user_data == hashlib.sha256(descriptor).digest()
    assert doc.public_key is None
    verified = verify_attestation(document, descriptor, nonce, d.policy())
    assert verified.pcrs[0] == PCRS[0] and verified.suite == "x25519"
    # The descriptor is the session's and stays put; every document is made afresh for its nonce.
    second = decode_attestation_bundle(_attest(d.gateway, new_nonce()).content)
    assert second[1] == descriptor and second[0] != document
    hybrid = decode_attestation_bundle(_attest(d.gateway, new_nonce(), "mlkem768-x25519").content)
    assert hybrid[1] != descriptor and len(cbor2.loads(hybrid[1])["hpke_public_key"]) == 1216


@pytest.mark.parametrize(
    "query",
    [
        {},
        {"nonce": "ab" * 15},
        {"nonce": "ab" * 513},
        {"nonce": "abc" * 11},
        {"nonce": "zz" * 16},
        {"nonce": "ab " * 16},
        {"nonce": "ab" * 32, "suite": "rsa"},
    ],
    ids=["missing", "15-bytes", "513-bytes", "odd-length", "not-hex", "spaces", "unknown-suite"],
)
def test_attestation_query_is_validated(deploy, query):
    d = deploy()
    r = d.gateway.get("/v1/attestation", params=query)
    assert r.status_code == 400
    assert r.json()["code"] == "bad_request"


@pytest.mark.parametrize("size", [16, 64, 512])
def test_attestation_nonce_sizes_at_the_limits_are_accepted(deploy, size):
    d = deploy()
    nonce = bytes(range(256)) * 2
    r = _attest(d.gateway, nonce[:size])
    assert r.status_code == 200
    assert parse_document(decode_attestation_bundle(r.content)[0]).nonce == nonce[:size]


# --- what the enclave refuses ----------------------------------------------------------------


def _sealed(d, text="hello there", **kw):
    nonce = new_nonce()
    document, descriptor = decode_attestation_bundle(_attest(d.gateway, nonce).content)
    verified = verify_attestation(document, descriptor, nonce, d.policy())
    request = {"messages": [{"role": "user", "content": text}], "max_tokens": 64, "temperature": 0.0}
    return seal_request(verified.descriptor, request, **kw)


def test_a_replayed_request_is_refused(deploy):
    d = deploy()
    sealed = _sealed(d)
    first = decode_frames(d.gateway.post("/v1/infer", content=sealed.envelope.to_cbor()).content)
    opener = sealed.response_opener()
    assert "".join(opener.open(f)["text"] for f in first) == "hello there"
    again = decode_frames(d.gateway.post("/v1/infer", content=sealed.envelope.to_cbor()).content)
    assert again == [again[0]] and again[0]["t"] == "error" and again[0]["code"] == "replayed_request"


def test_a_stale_request_is_refused(deploy):
    d = deploy()
    sealed = _sealed(d, timestamp=int(time.time() * 1000) - 10 * 60 * 1000)
    (reply,) = decode_frames(d.gateway.post("/v1/infer", content=sealed.envelope.to_cbor()).content)
    assert reply["code"] == "stale_request" and reply["retryable"] is True


def test_a_request_for_a_key_the_enclave_lost_is_retryable_and_the_client_re_attests(deploy):
    d = deploy()
    http, recorder = _recording_client(d)
    client = d.client(http=http)
    assert "".join(c.text for c in _ask(client, "before restart")) == "before restart"
    stale = _sealed(d)
    d.enclave.restart()  # new process, new session keys
    (reply,) = decode_frames(d.gateway.post("/v1/infer", content=stale.envelope.to_cbor()).content)
    assert reply["code"] == "attested_descriptor_unknown" and reply["retryable"] is True
    assert "".join(c.text for c in _ask(client, "after restart")) == "after restart"
    assert recorder.paths() == [
        ("GET", "/v1/attestation"),
        ("POST", "/v1/infer"),
        ("POST", "/v1/infer"),  # sealed to the old key: refused before any answer
        ("GET", "/v1/attestation"),
        ("POST", "/v1/infer"),
    ]


@pytest.mark.parametrize(
    ("enclave", "policy", "error"),
    [
        ({"pcrs": {**PCRS, 0: hashlib.sha384(b"patched").digest()}}, {}, PcrMismatchError),
        ({"debug": True}, {}, (DebugModeError, PcrMismatchError)),
        ({}, "other-root", UntrustedRootError),
    ],
    ids=["different-pcr0", "debug-mode", "another-root"],
)
def test_a_refused_enclave_never_receives_the_question(deploy, tmp_path, enclave, policy, error):
    d = deploy(**enclave)
    if policy == "other-root":
        other = DevCA.load_or_create(tmp_path / "other-ca")
        policy = {"trust_root": type(d.policy().trust_root)(pem=other.root_pem.decode())}
    http, recorder = _recording_client(d)
    client = d.client(http=http, **policy)
    with pytest.raises(error):
        _ask(client, f"my record is {CANARY}")
    assert recorder.paths() == [("GET", "/v1/attestation")]
    assert all(CANARY.encode() not in body for _, _, body in recorder.sent)
    assert d.enclave.stats()["requests"] == 0
    assert client.describe()["verified"] is False


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda fs: fs[:-1], ResponseTruncatedError),
        (lambda fs: [fs[0], fs[0], *fs[1:]], ChunkReplayError),
        (lambda fs: [fs[1], fs[0], *fs[2:]], ChunkGapError),
    ],
    ids=["cut-short", "replayed", "swapped"],
)
def test_answer_tampered_with_after_the_gateway_is_detected(deploy, tamper, error):
    d = deploy()
    http, _ = _recording_client(d, tamper)
    with pytest.raises(error):
        _ask(d.client(http=http), "one two three four")


def test_answers_of_different_length_in_one_bucket_look_alike_on_the_wire(deploy):
    d = deploy()
    sizes = []
    for text in ("ok fine", "extraordinarily comprehensive"):  # 7 vs 29 characters, two words each
        sealed = _sealed(d, text)
        body = d.gateway.post("/v1/infer", content=sealed.envelope.to_cbor()).content
        frames, opener = decode_frames(body), sealed.response_opener()
        assert "".join(opener.open(f)["text"] for f in frames) == text
        sizes.append((len(sealed.envelope.to_cbor()), len(body), [len(encode_frame(f)) for f in frames]))
    assert sizes[0] == sizes[1]


# --- the dispatch seam ------------------------------------------------------------------------


def test_kms_envelopes_still_take_the_kms_path(deploy):
    d = deploy()
    header = KmsHeader.new(model="default", conversation_id="a" * 32, key_id="alias/k")
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0.0}
    envelope = kms_seal(b"k" * 32, header, request, edk=b"e" * 40)
    (reply,) = decode_frames(d.gateway.post("/v1/infer", content=envelope.to_cbor()).content)
    assert reply["code"] == "no_credentials"  # reached KMS key release, not the attested opener


def test_infer_frames_naming_their_protocol_are_dispatched_by_name(deploy):
    d = deploy()
    sealed = _sealed(d, "named")
    replies = d.enclave.call(infer_frame(sealed.envelope.to_cbor(), protocol="attested"))
    opener = sealed.response_opener()
    assert "".join(opener.open(f)["text"] for f in replies) == "named"
    opener.finish()
    # a kms envelope in a frame that names "attested" goes to the attested reader, which refuses it
    header = KmsHeader.new(model="default", conversation_id="a" * 32, key_id="alias/k")
    request = {"messages": [{"role": "user", "content": "hi"}], "max_tokens": 8, "temperature": 0.0}
    kms = kms_seal(b"k" * 32, header, request, edk=b"e" * 40).to_cbor()
    (reply,) = d.enclave.call(infer_frame(kms, protocol="attested"))
    assert reply["code"] == "bad_attested_envelope"
    (reply,) = d.enclave.call(infer_frame(kms, protocol="seed"))
    assert reply["code"] == "unknown_protocol" and "attested, kms" in reply["hint"]
    (reply,) = d.enclave.call(infer_frame(kms, protocol="kms"))
    assert reply["code"] == "no_credentials"


def test_an_enclave_without_the_attested_protocol_refuses_itsdecode_frames(tmp_path, ca):

    address = f"unix:{tmp_path / 'plain.sock'}"
    nsm = open_emulated_nsm(ca=ca, pcrs=PCRS)
    server = EnclaveServer(
        engine=EchoEngine(),
        key_release=KeyRelease(nsm=nsm, kms_client_factory=None, open_envelope=open_enveloped_data),
        config=EnclaveConfig(engine="echo"),
        io_timeout=5.0,
    )
    listener = listen(address)
    server.start(listener)
    try:
        from nitro_llm.protocol.attested_wire import attest_frame

        from .conftest import Enclave

        probe = Enclave(address, ca, EnclaveConfig(engine="echo"), PCRS)
        (reply,) = probe.call(attest_frame(new_nonce()))
        assert reply["code"] == "bad_frame"
    finally:
        server.stop()
        close_listener(listener, address)


def test_gateway_process_loads_no_sealing_or_opening_code():
    forbidden = (
        "nitro_llm.protocol.attested",
        "nitro_llm.protocol.hpke_suite",
        "nitro_llm.protocol.kms_envelope",
        "nitro_llm.enclave",
        "nitro_llm.client",
        "nitro_llm.kms.cms",
        "cryptography.hazmat.primitives.hpke",
    )
    allowed = ("nitro_llm.protocol.attested_wire", "nitro_llm.protocol.attested_errors")
    probe = (
        "import sys, nitro_llm.gateway.app, nitro_llm.cli.gateway\n"
        f"print(sorted(m for m in sys.modules if m.startswith({forbidden!r}) and m not in {allowed!r}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert out.stdout.strip() == "[]"


# --- the client commands ----------------------------------------------------------------------


def test_protocol_default_is_attested_only_when_a_policy_exists(state_home, tmp_path):
    assert choose_protocol(None, None) == "kms"
    assert choose_protocol("kms", None) == "kms"
    policy = tmp_path / "p.json"
    policy.write_text("{}")
    assert choose_protocol(None, policy) == "attested"
    default_policy_path().parent.mkdir(parents=True)
    default_policy_path().write_text("{}")
    assert choose_protocol(None, None) == "attested"
    assert choose_protocol("kms", None) == "kms"


def test_ask_speaks_attested_by_default_when_up_wrote_a_policy(deploy, serve, state_home):
    from nitro_llm.client.config import ClientConfig, default_config_path
    from nitro_llm.gateway.app import create_app
    from nitro_llm.gateway.settings import GatewaySettings

    d = deploy()
    with serve(create_app(GatewaySettings(enclave=d.enclave.address))) as gateway:
        ClientConfig(gateway_url=gateway.url, key_id="alias/unused").save(default_config_path())
        d.policy().save(default_policy_path())
        runner = CliRunner()
        result = runner.invoke(cli_app, ["ask", f"the answer is {CANARY}"])
        assert result.exit_code == 0, result.output
        assert f"the answer is {CANARY}" in result.stdout
        hybrid = runner.invoke(cli_app, ["ask", "post quantum", "--hybrid", "--gateway", gateway.url])
        assert hybrid.exit_code == 0 and "post quantum" in hybrid.stdout
        # kms asked for explicitly goes the other way: it needs KMS, which this test has none of
        kms = runner.invoke(cli_app, ["ask", "hi", "--protocol", "kms"])
        assert kms.exit_code != 0 and "hi" not in kms.stdout
    assert d.enclave.stats()["requests"] == 2


def test_ask_refuses_an_unverified_enclave_without_sending(deploy, serve, state_home, tmp_path):
    d = deploy(pcrs={**PCRS, 0: b"\x07" * 48})
    with serve(create_app_for(d)) as gateway:
        policy = tmp_path / "policy.json"
        d.policy().save(policy)
        result = CliRunner().invoke(
            cli_app,
            ["ask", CANARY, "--protocol", "attested", "--policy", str(policy), "--gateway", gateway.url],
        )
    assert result.exit_code == 2
    assert "attestation_pcr_mismatch" in result.output.replace("\n", "")
    assert d.enclave.stats()["requests"] == 0


def create_app_for(d):
    from nitro_llm.gateway.app import create_app
    from nitro_llm.gateway.settings import GatewaySettings

    return create_app(GatewaySettings(enclave=d.enclave.address))


# --- the local stack's policy -----------------------------------------------------------------


def test_local_policy_pins_the_measurements_and_verifies_a_matching_enclave(tmp_path, ca):
    from nitro_llm.client.policy import ClientPolicy
    from nitro_llm.inference.model import DEFAULT_MODEL_SHA256
    from nitro_llm_dev.local.client_policy import local_policy

    pem = tmp_path / "root.pem"
    pem.write_bytes(ca.root_pem)
    policy = local_policy({str(i): v.hex() for i, v in PCRS.items()}, pem)
    path = tmp_path / "policy.json"
    policy.save(path)
    data = json.loads(path.read_text())
    assert data["unsafe_dev_root"] is True and data["allow_debug"] is False
    assert data["expected_pcrs"] == {str(i): v.hex() for i, v in PCRS.items()}
    assert data["model_digest"] == DEFAULT_MODEL_SHA256 and "BEGIN CERTIFICATE" in data["trust_root"]["pem"]
    loaded = ClientPolicy.load(path)
    assert loaded.unsafe_reasons() and loaded == policy
    # It accepts the enclave it was written for, and not the same one in debug mode.
    from nitro_llm.protocol.attested import EnclaveSession

    session = EnclaveSession.generate(model_digest=DEFAULT_MODEL_SHA256, config_digest="c" * 64)
    for debug, expected in ((False, None), (True, (DebugModeError, PcrMismatchError))):
        nsm = open_emulated_nsm(ca=ca, pcrs=PCRS, debug=debug)
        nonce = new_nonce()
        document = nsm.attest(user_data=session.user_data(), nonce=nonce)
        if expected is None:
            verified = verify_attestation(document, session.descriptor_bytes, nonce, loaded)
            assert verified.leaf_not_after > dt.datetime.now(dt.UTC)
        else:
            with pytest.raises(expected):
                verify_attestation(document, session.descriptor_bytes, nonce, loaded)
