"""The real backends against an in-process gateway + enclave built from the protocol's own pieces.

The "enclave" here is the attested protocol's enclave side (EnclaveSession, the emulated NSM, the
response sealer) behind an httpx MockTransport standing where the gateway's HTTP API stands; it
records every request, so the tests can assert on exactly what the gateway received.
"""

import base64
import functools
import hashlib
import os

import cbor2
import httpx
import openai
import pytest

from nitro_llm.attestation import DebugModeError, PcrMismatchError, UntrustedRootError
from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.config import ClientConfig
from nitro_llm.client.errors import GatewayUnreachable
from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.protocol.attested import EnclaveSession, encode_attestation_bundle
from nitro_llm.protocol.attested_errors import UnknownDescriptorError
from nitro_llm.protocol.errors import ChunkGapError, ChunkReplayError, ResponseTruncatedError
from nitro_llm.protocol.frame_codec import encode_frame
from nitro_llm.protocol.kms_envelope import KmsEnvelope, ResponseSealer, open_request
from nitro_llm.protocol.messages import ChatRequest
from nitro_llm.proxy.app import create_app
from nitro_llm.proxy.confidential_backends import AttestedBackend, KmsBackend
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

PCRS = {i: hashlib.sha384(f"measured pcr{i}".encode()).digest() for i in (0, 1, 2)}
MODEL = hashlib.sha256(b"smollm2.gguf").hexdigest()
CANARY = "CANARY-PATIENT-4471"
GATEWAY = "http://gateway.test"


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return DevCA.load_or_create(tmp_path_factory.mktemp("ca") / "dev-ca")


@pytest.fixture(scope="module")
def other_ca(tmp_path_factory):
    return DevCA.load_or_create(tmp_path_factory.mktemp("other") / "dev-ca")


class FakeGatewayEnclave:
    """Gateway HTTP API + attested enclave in one object; ``tamper`` rewrites the answer frames."""

    def __init__(self, ca, *, pcrs=PCRS, debug=False):
        self.nsm = open_emulated_nsm(ca=ca, pcrs=pcrs, debug=debug)
        self.sessions = {}
        self.requests = []
        self.conversations = []  # each opened request's conversation secret (None: none sent)
        self.one_shots = []  # each opened request's one_shot (sealed: the gateway never sees it)
        self.wire = []  # every request as the gateway receives it: method, URL, headers, body
        self.tamper = None
        self.rotate()

    def rotate(self):
        self.sessions = {
            suite: EnclaveSession.generate(model_digest=MODEL, config_digest="c" * 64, suite=suite)
            for suite in ("x25519", "mlkem768-x25519")
        }

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append((request.method, request.url.path, request.content))
        self.wire.append(on_the_wire(request))
        if request.method == "GET" and request.url.path == "/v1/attestation":
            session = self.sessions[request.url.params["suite"]]
            nonce = bytes.fromhex(request.url.params["nonce"])
            document = self.nsm.attest(user_data=session.user_data(), nonce=nonce)
            return httpx.Response(200, content=encode_attestation_bundle(document, session.descriptor_bytes))
        if request.method == "POST" and request.url.path == "/v1/infer":
            suite = cbor2.loads(request.content)["suite"]
            try:
                opened = self.sessions[suite].open_request(request.content)
            except UnknownDescriptorError as exc:
                return httpx.Response(200, content=encode_frame({"t": "error", **exc.to_wire()}))
            self.conversations.append(opened.conversation)
            self.one_shots.append(opened.request.one_shot)
            sealer = opened.response_sealer()
            words = ("answer to: " + opened.request.messages[-1].content).split(" ")
            frames = [sealer.seal(w if i == 0 else " " + w) for i, w in enumerate(words)]
            frames.append(
                sealer.seal({"text": "", "finish_reason": "stop", "usage": {"completion_tokens": 3}}, True)
            )
            if self.tamper:
                frames = self.tamper(frames)
            return httpx.Response(200, content=b"".join(encode_frame(f) for f in frames))
        return httpx.Response(404, json={"code": "not_found", "message": "no such route"})

    def paths(self):
        return [(method, path) for method, path, _ in self.requests]


def on_the_wire(request: httpx.Request) -> bytes:
    """The request as bytes on the wire (HTTP/1.1's request line, headers and body)."""
    head = [f"{request.method} {request.url.raw_path.decode()} HTTP/1.1".encode()]
    head += [name + b": " + value for name, value in request.headers.raw]
    return b"\r\n".join(head) + b"\r\n\r\n" + request.read()


def forms(secret: bytes) -> list[bytes]:
    """What a secret or a name could look like in a request: raw, hex (either case), base64."""
    return [
        secret,
        secret.hex().encode(),
        secret.hex().upper().encode(),
        base64.b64encode(secret),
        base64.urlsafe_b64encode(secret).rstrip(b"="),
    ]


def _policy(ca, **over):
    fields = {
        "expected_pcrs": dict(PCRS),
        "trust_root": TrustRoot(pem=ca.root_pem.decode()),
        "unsafe_dev_root": True,
    }
    fields.update(over)
    return ClientPolicy(**fields)


def _backend(gateway, policy, suite="x25519"):
    http = httpx.Client(transport=httpx.MockTransport(gateway.handler))
    return AttestedBackend(GATEWAY, policy, suite=suite, http=http, model_id="smollm2")


def _ask(backend, text, **named):
    return list(
        backend.stream(
            [{"role": "user", "content": text}], max_tokens=16, temperature=0.0, seed=None, **named
        )
    )


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_attested_answer_round_trip(ca, suite):
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca), suite)
    chunks = _ask(backend, f"my id is {CANARY}")
    assert "".join(c.text for c in chunks) == f"answer to: my id is {CANARY}"
    assert chunks[-1].finish_reason == "stop" and chunks[-1].usage == {"completion_tokens": 3}
    assert gateway.paths() == [("GET", "/v1/attestation"), ("POST", "/v1/infer")]
    assert all(CANARY.encode() not in body for _, _, body in gateway.requests)
    _ask(backend, "second question")  # the verified key is cached: no second attestation
    assert gateway.paths().count(("GET", "/v1/attestation")) == 1
    panel = backend.describe()
    assert panel["verified"] is True and panel["hpke_suite"] == suite and panel["model_digest"] == MODEL


def test_proxy_links_no_chats_and_a_conversation_links_its_own_turns(ca):
    """The proxy relays unrelated chats through one client: it sends no conversation secret, so the
    enclave keeps nothing shared by them. A chat client sends one secret per conversation object."""
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca))
    _ask(backend, "one chat")
    _ask(backend, "another chat")
    assert gateway.conversations == [None, None]
    http = httpx.Client(transport=httpx.MockTransport(gateway.handler))
    first, second = (AttestedConversation(GATEWAY, _policy(ca), http=http) for _ in range(2))
    for conversation in (first, first, second):
        conversation.ask([{"role": "user", "content": "turn"}], max_tokens=4)
    mine, again, theirs = gateway.conversations[2:]
    assert mine is not None and len(mine) == 32 and mine == again and theirs != mine


# --- named chats (proxy/conversations.py) -------------------------------------------------------

#: A name a script or a page might send: guessable, so it must never be sent on, nor derive a secret.
NAME = "my-chat-about-ibuprofen-0001"


def test_named_chats_each_get_their_own_secret_and_unnamed_requests_none(ca):
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca))
    for name in ("chat-1", "chat-2", "chat-1", None, "chat-2", None):
        _ask(backend, "a turn", **({"conversation": name} if name else {}))
    one, two, one_again, unnamed, two_again, unnamed_again = gateway.conversations
    assert one is not None and len(one) == 32 and one_again == one
    assert two is not None and two_again == two and two != one
    assert unnamed is None and unnamed_again is None  # as before: nothing kept, nothing linked
    assert gateway.paths().count(("GET", "/v1/attestation")) == 1  # one verification for every chat
    another_proxy = _backend(gateway, _policy(ca))
    _ask(another_proxy, "a turn", conversation="chat-1")
    assert gateway.conversations[-1] not in (None, one)  # drawn at random, not derived from the name


def test_openai_sdk_names_its_chat_and_the_gateway_sees_neither_the_name_nor_the_secret(ca, serve):
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca))
    messages = [{"role": "user", "content": "hi"}]
    with serve(create_app(backend)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        ask = functools.partial(client.chat.completions.create, model="smollm2", messages=messages)
        ask(extra_headers={"X-Nitro-Conversation": NAME})
        ask(prompt_cache_key=NAME)
        "".join(c.choices[0].delta.content or "" for c in ask(stream=True, prompt_cache_key=NAME))
        ask()
    by_header, by_field, streamed, unnamed = gateway.conversations
    assert by_header is not None and by_header == by_field == streamed and unnamed is None
    received = b"".join(gateway.wire)
    assert gateway.paths().count(("POST", "/v1/infer")) == 4
    for needle in forms(NAME.encode()) + forms(by_header):
        assert needle not in received


@pytest.mark.parametrize(
    ("make_gateway", "error"),
    [
        (
            lambda ca, other: FakeGatewayEnclave(ca, pcrs={**PCRS, 0: hashlib.sha384(b"evil").digest()}),
            PcrMismatchError,
        ),
        (lambda ca, other: FakeGatewayEnclave(ca, debug=True), (DebugModeError, PcrMismatchError)),
        (lambda ca, other: FakeGatewayEnclave(other), UntrustedRootError),
    ],
    ids=["different-pcr0", "debug-mode", "another-root"],
)
def test_refused_enclave_never_receives_the_question(ca, other_ca, make_gateway, error):
    gateway = make_gateway(ca, other_ca)
    backend = _backend(gateway, _policy(ca))
    with pytest.raises(error):
        _ask(backend, f"my id is {CANARY}")
    assert gateway.paths() == [("GET", "/v1/attestation")]  # no /v1/infer: not one byte of the question
    assert all(CANARY.encode() not in body for _, _, body in gateway.requests)
    panel = backend.describe()
    assert panel["verified"] is False and panel["failure_reason"].startswith("[attestation_")


def test_key_rotation_is_followed_by_one_re_attestation(ca):
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca))
    _ask(backend, "first")
    gateway.rotate()
    chunks = _ask(backend, "after rotation")
    assert "".join(c.text for c in chunks) == "answer to: after rotation"
    assert gateway.paths() == [
        ("GET", "/v1/attestation"),
        ("POST", "/v1/infer"),
        ("POST", "/v1/infer"),  # refused: sealed to the old key
        ("GET", "/v1/attestation"),
        ("POST", "/v1/infer"),
    ]


class RestartingGateway(FakeGatewayEnclave):
    """Goes away (connections refused), then comes back with a restarted enclave: new keys."""

    down = False

    def handler(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"gateway": "ok", "enclave": "ok"})
        return super().handler(request)

    def restart(self):
        self.rotate()
        self.down = False


@pytest.mark.parametrize("noticed_by", ["probe", "request"])
def test_a_session_verified_before_the_gateway_went_away_is_never_sealed_to_again(ca, noticed_by):
    """Unlike a key rotation (one request sealed to the old key, refused), nothing is sent to a key
    verified before the gateway stopped answering: the restarted enclave is verified first."""
    gateway = RestartingGateway(ca)
    backend = _backend(gateway, _policy(ca))
    _ask(backend, "first")
    verified_at = backend.describe()["verified_at"]
    assert backend.probe() is None
    gateway.down = True
    if noticed_by == "probe":  # GET /v1/verification, or the web chat polling it
        assert backend.probe().startswith(f"no gateway answers at {GATEWAY}")
    else:
        with pytest.raises(GatewayUnreachable):
            _ask(backend, "while it is down")
    facts = backend.describe()
    assert facts["verified"] is None and facts["verified_at"] is None
    assert facts["last_verified_at"] == verified_at
    gateway.restart()
    gateway.requests.clear()
    assert "".join(c.text for c in _ask(backend, "after the restart")) == "answer to: after the restart"
    assert gateway.paths() == [("GET", "/v1/attestation"), ("POST", "/v1/infer")]


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda frames: frames[:-1], ResponseTruncatedError),
        (lambda frames: [frames[0], frames[0], *frames[1:]], ChunkReplayError),
        (lambda frames: [frames[1], frames[0], *frames[2:]], ChunkGapError),
    ],
    ids=["cut-short", "replayed", "swapped"],
)
def test_gateway_tampering_with_the_answer_is_detected(ca, tamper, error):
    gateway = FakeGatewayEnclave(ca)
    gateway.tamper = tamper
    with pytest.raises(error):
        _ask(_backend(gateway, _policy(ca)), "a question with several words")


def test_openai_sdk_through_the_proxy_with_the_attested_protocol(ca, serve):
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca), "mlkem768-x25519")
    with serve(create_app(backend)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "hi there"}]
        )
        stream = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "stream this"}], stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert reply.choices[0].message.content == "answer to: hi there"
    assert streamed == "answer to: stream this"


def test_openai_sdk_is_refused_when_the_enclave_is_not_verified(ca, serve):
    gateway = FakeGatewayEnclave(ca, pcrs={**PCRS, 0: hashlib.sha384(b"evil").digest()})
    backend = _backend(gateway, _policy(ca))
    with serve(create_app(backend)) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        with pytest.raises(openai.PermissionDeniedError) as info:
            client.chat.completions.create(model="smollm2", messages=[{"role": "user", "content": CANARY}])
    assert info.value.code == "enclave_not_verified"
    assert ("POST", "/v1/infer") not in gateway.paths()


# --- kms ---------------------------------------------------------------------------------------


class ToyKms:
    """Stands in for KMS GenerateDataKey; the "enclave" below decrypts the edk with the same table."""

    def __init__(self):
        self.keys = {}
        self.calls = []

    def generate_data_key(self, *, KeyId, KeySpec, EncryptionContext):
        self.calls.append(EncryptionContext)
        key, edk = os.urandom(32), os.urandom(64)
        self.keys[edk] = key
        return {"Plaintext": key, "CiphertextBlob": edk}


def _kms_gateway(kms, seen, wire=None, one_shots=None):
    def gateway(request: httpx.Request) -> httpx.Response:
        envelope = KmsEnvelope.from_cbor(request.content)
        seen.append(envelope.header.conversation_id)
        if wire is not None:
            wire.append((envelope.edk, on_the_wire(request)))
        key = kms.keys[envelope.edk]
        opened = ChatRequest.from_dict(open_request(key, envelope))
        if one_shots is not None:
            one_shots.append(opened.one_shot)
        question = opened.messages[-1].content
        sealer = ResponseSealer(key, envelope.header)
        frames = [sealer.seal("kms says: "), sealer.seal(question)]
        frames.append(
            sealer.seal({"text": "", "finish_reason": "length", "usage": {"completion_tokens": 2}}, True)
        )
        return httpx.Response(200, content=b"".join(encode_frame(f) for f in frames))

    return gateway


def _kms_backend(kms, seen, wire=None, one_shots=None):
    config = ClientConfig(gateway_url=GATEWAY, key_id="alias/test", model="smollm2")
    gateway = _kms_gateway(kms, seen, wire, one_shots)
    return KmsBackend(config, http=httpx.Client(transport=httpx.MockTransport(gateway)), kms=kms)


def test_kms_backend_streams_through_kms_conversation_one_conversation_per_request():
    kms, seen = ToyKms(), []
    backend = _kms_backend(kms, seen)
    for question in ("one", "two"):
        chunks = list(
            backend.stream([{"role": "user", "content": question}], max_tokens=8, temperature=0, seed=1)
        )
        assert "".join(c.text for c in chunks) == f"kms says: {question}"
        assert chunks[-1].finish_reason == "length" and chunks[-1].usage == {"completion_tokens": 2}
    assert len(set(seen)) == 2 and len(kms.calls) == 2  # unlinkable: a data key per request
    assert backend.describe()["protocol"] == "kms" and backend.model_id == "smollm2"


def test_openai_sdk_through_the_proxy_with_the_kms_protocol(serve):
    kms, seen = ToyKms(), []
    with serve(create_app(_kms_backend(kms, seen))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        reply = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "plain"}]
        )
        stream = client.chat.completions.create(
            model="smollm2", messages=[{"role": "user", "content": "streamed"}], stream=True
        )
        streamed = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
    assert reply.choices[0].message.content == "kms says: plain"
    assert reply.choices[0].finish_reason == "length"
    assert streamed == "kms says: streamed"
    assert len(seen) == 2


def test_kms_named_chats_keep_one_data_key_each_and_the_gateway_sees_neither_name_nor_key(serve):
    kms, seen, wire = ToyKms(), [], []
    order = [NAME, "chat-2", NAME, None, "chat-2", None]
    with serve(create_app(_kms_backend(kms, seen, wire))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for i, name in enumerate(order):
            named = (
                {}
                if name is None
                else {"prompt_cache_key": name}
                if i % 2
                else {"extra_headers": {"X-Nitro-Conversation": name}}
            )
            client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "hi"}], **named
            )
    one, two, one_again, unnamed, two_again, unnamed_again = seen
    assert one == one_again and two == two_again
    assert len({one, two, unnamed, unnamed_again}) == 4  # unnamed requests: unlinkable, as before
    edks = [edk for edk, _ in wire]
    assert edks[0] == edks[2] and edks[1] == edks[4] and len(set(edks)) == 4
    assert len(kms.calls) == 4  # one GenerateDataKey per named chat, one per unnamed request
    assert kms.keys[edks[0]] != kms.keys[edks[1]]
    received = b"".join(raw for _, raw in wire)
    for needle in forms(NAME.encode()) + [form for key in kms.keys.values() for form in forms(key)]:
        assert needle not in received
    assert NAME not in repr(kms.calls)  # nor in what KMS is told (the encryption context)


# --- one_shot: an unnamed request is never continued, so the enclave is told to keep nothing ------


def test_attested_unnamed_requests_are_sealed_one_shot_and_named_chats_are_not(ca):
    gateway = FakeGatewayEnclave(ca)
    backend = _backend(gateway, _policy(ca))
    for name in (None, "chat-1", "chat-1", None):
        _ask(backend, "a turn", **({"conversation": name} if name else {}))
    assert gateway.one_shots == [True, False, False, True]
    assert gateway.conversations[0] is None and gateway.conversations[3] is None


def test_kms_unnamed_requests_are_sealed_one_shot_and_named_chats_are_not(serve):
    kms, seen, one_shots = ToyKms(), [], []
    with serve(create_app(_kms_backend(kms, seen, one_shots=one_shots))) as server:
        client = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0)
        for named in ({}, {"prompt_cache_key": NAME}, {"extra_headers": {"X-Nitro-Conversation": NAME}}, {}):
            client.chat.completions.create(
                model="smollm2", messages=[{"role": "user", "content": "hi"}], **named
            )
    assert one_shots == [True, False, False, True]
    assert seen[1] == seen[2] and len({seen[0], seen[1], seen[3]}) == 3


def test_a_one_shot_attested_turn_carries_no_conversation_secret(ca):
    """A conversation object that keeps a secret (``nitro-llm ask``'s) does not send it on a turn
    that says no turn follows; its other turns still carry it."""
    gateway = FakeGatewayEnclave(ca)
    http = httpx.Client(transport=httpx.MockTransport(gateway.handler))
    conversation = AttestedConversation(GATEWAY, _policy(ca), http=http)
    conversation.ask([{"role": "user", "content": "once"}], max_tokens=4, one_shot=True)
    conversation.ask([{"role": "user", "content": "turn"}], max_tokens=4)
    assert gateway.one_shots == [True, False]
    assert gateway.conversations[0] is None and gateway.conversations[1] is not None
