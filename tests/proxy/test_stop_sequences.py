"""Stop sequences (OpenAI's ``stop``): sealed into the request with the question, applied inside the
enclave to whatever engine answers, the answer cut before the first match with ``finish_reason``
"stop" — also when the match spans two token pieces, and while streaming.

Through the proxy with the openai SDK, in both protocols, against the real gateway app and the real
enclave server (echo engine: it answers with the question word by word, so a stop string inside the
question is deterministic); the gateway's side of the wire is recorded to show it never sees them.
"""

from __future__ import annotations

import itertools
import os
import socket
from collections.abc import Iterator, Mapping
from typing import Any

import hypothesis.strategies as st
import openai
import pytest
from attested_wiring.conftest import MODEL_DIGEST, PCRS
from enclave.conftest import FakeKms
from hypothesis import given, settings
from wire_tools import RunningServer

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.policy import ClientPolicy, TrustRoot
from nitro_llm.enclave.attested_handler import AttestedHandler, config_digest
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.gateway.app import create_app as gateway_app
from nitro_llm.gateway.settings import GatewaySettings
from nitro_llm.inference.engine import TokenChunk, Usage
from nitro_llm.inference.stops import StopAt, stop_at
from nitro_llm.kms.cms import open_enveloped_data
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.errors import RequestSchemaError
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.messages import MAX_STOP_CHARS, ChatRequest, chat_request
from nitro_llm.proxy.app import create_app
from nitro_llm.proxy.confidential_backends import AttestedBackend, KmsBackend
from nitro_llm.transport import close_listener, connect, listen
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA

COUNT = "count 1 2 3 4 5 6 7 8 9"


# --- the filter, on its own ---------------------------------------------------------------------


def _pieces(*texts: str, reason: str = "length") -> Iterator[TokenChunk]:
    yield from (TokenChunk(t) for t in texts)
    yield TokenChunk("", reason, Usage(3, len(texts)))  # type: ignore[arg-type]


def _run(chunks, stops):
    out = list(stop_at(chunks, stops))
    assert out[-1].final and not any(c.final for c in out[:-1])
    return "".join(c.text for c in out), out[-1].finish_reason, out


def test_a_stop_string_spanning_two_pieces_is_cut_and_never_sent():
    text, reason, out = _run(_pieces("The answer is 4", "2, and", " more"), ["42"])
    assert (text, reason) == ("The answer is ", "stop")
    assert all("4" not in c.text for c in out)  # the "4" was held back, never sent and taken back


def test_a_held_back_start_that_does_not_match_is_sent_with_the_next_piece():
    text, reason, out = _run(_pieces("a 4", "3 b"), ["42"])
    assert (text, reason) == ("a 43 b", "length")
    assert [c.text for c in out[:-1]] == ["a ", "43 b"]


def test_a_possible_start_at_the_very_end_is_sent_when_the_answer_ends():
    text, reason, _ = _run(_pieces("x", "y 4"), ["42"])
    assert (text, reason) == ("xy 4", "length")


def test_the_earliest_of_several_stops_wins_and_the_engine_is_stopped():
    closed = []

    class Engine:
        def __init__(self):
            self.inner = _pieces("alpha ", "beta ", "gamma ", "delta")

        def __iter__(self):
            return self

        def __next__(self):
            return next(self.inner)

        def close(self):
            closed.append(True)

    text, reason, out = _run(Engine(), ["delta", "eta"])
    assert (text, reason) == ("alpha b", "stop")
    assert closed == [True]
    assert out[-1].usage.completion_tokens == 2  # pieces received up to the match


@settings(max_examples=300, deadline=None)
@given(
    text=st.text(alphabet="ab5 é", max_size=40),
    cuts=st.lists(st.integers(0, 40), max_size=8),
    stops=st.lists(st.text(alphabet="ab5 é", min_size=1, max_size=4), min_size=1, max_size=4),
)
def test_any_split_gives_the_text_before_the_first_match(text, cuts, stops):
    """Character by character, as if the engine produced one character at a time: the answer ends
    before the first stop string completed, whatever the pieces were."""
    bounds = sorted({0, len(text), *(c for c in cuts if c <= len(text))})
    pieces = [text[a:b] for a, b in itertools.pairwise(bounds)]
    got, reason, _ = _run(_pieces(*pieces), stops)
    for end in range(len(text) + 1):
        completed = [end - len(s) for s in stops if text[:end].endswith(s)]
        if completed:
            assert (got, reason) == (text[: min(completed)], "stop")
            break
    else:
        assert (got, reason) == (text, "length")


def test_no_stop_strings_leave_the_stream_as_it_is():
    chunks = _pieces("a")
    assert stop_at(chunks, ()) is chunks
    assert isinstance(stop_at(_pieces("a"), ["x"]), StopAt)


# --- the request schema: sealed, bounded --------------------------------------------------------


def test_stop_is_part_of_the_sealed_request_and_bounded():
    question: list[Mapping[str, str]] = [{"role": "user", "content": "hi"}]
    request = chat_request(question, stop=["5", "\n\n"])
    assert request.to_dict()["stop"] == ["5", "\n\n"]
    assert ChatRequest.from_dict(request.to_dict()) == request
    assert "stop" not in chat_request(question).to_dict()  # unused: absent, as before
    assert chat_request(question, stop="5").stop == ("5",)
    assert "\n\n" not in repr(request)
    for bad in (["a"] * 5, [""], ["x" * (MAX_STOP_CHARS + 1)]):
        with pytest.raises(RequestSchemaError):
            chat_request(question, stop=bad)
    for bad_field in ("5", [5], ["a"] * 5):
        with pytest.raises(RequestSchemaError):
            ChatRequest.from_dict({**chat_request(question).to_dict(), "stop": bad_field})


# --- through the proxy, the gateway and the enclave, in both protocols --------------------------


class _ClientKms:
    """The client's KMS GenerateDataKey, backed by the same table the enclave's fake KMS decrypts with."""

    def __init__(self, kms: FakeKms) -> None:
        self.kms = kms

    def generate_data_key(self, *, KeyId, KeySpec, EncryptionContext):
        key, edk = os.urandom(32), b"edk-" + os.urandom(60)
        self.kms.keys[edk] = (key, dict(EncryptionContext))
        return {"Plaintext": key, "CiphertextBlob": edk}


class _Recording:
    """ASGI middleware in front of the gateway app: every request body it received."""

    def __init__(self, app) -> None:
        self.app = app
        self.bodies: list[bytes] = []

    async def __call__(self, scope, receive, send):
        async def recorded():
            message = await receive()
            if message["type"] == "http.request":
                self.bodies.append(message.get("body", b""))
            return message

        await self.app(scope, recorded if scope["type"] == "http" else receive, send)


@pytest.fixture(scope="module")
def deployment(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("stop")
    ca = DevCA.load_or_create(tmp / "dev-ca")
    kms = FakeKms()
    nsm = open_emulated_nsm(ca=ca, pcrs=dict(PCRS))
    config = EnclaveConfig(engine="echo")
    server = EnclaveServer(
        engine=EchoEngine(),
        key_release=KeyRelease(nsm=nsm, kms_client_factory=lambda _c: kms, open_envelope=open_enveloped_data),
        config=config,
        io_timeout=5.0,
        attested=AttestedHandler.generate(
            nsm, model_digest=MODEL_DIGEST, config_digest=config_digest(config.measured())
        ),
    )
    address = f"unix:{tmp / 'enclave.sock'}"
    listener = listen(address)
    server.start(listener)
    with connect(address, 5.0) as sock:  # the enclave role's credentials, as the gateway hands them over
        sock.sendall(
            encode_frame(frame_kinds.credentials_frame(frame_kinds.Credentials("AKIA-ENCLAVE", "s", "t")))
        )
        sock.shutdown(socket.SHUT_WR)
        assert read_frame(sock) == {"t": "ok"}
    recording = _Recording(gateway_app(GatewaySettings(enclave=address)))
    with RunningServer(recording) as gateway:
        policy = ClientPolicy(
            expected_pcrs=dict(PCRS), trust_root=TrustRoot(pem=ca.root_pem.decode()), unsafe_dev_root=True
        )
        backends: dict[str, Any] = {
            "kms": KmsBackend(
                ClientConfig(gateway_url=gateway.url, key_id="alias/test"), kms=_ClientKms(kms)
            ),
            "attested": AttestedBackend(gateway.url, policy),
        }
        yield backends, recording
        for backend in backends.values():
            backend.close()
    server.stop()
    close_listener(listener, address)


def _ask(proxy_url: str, question: str, *, stream: bool, **options: Any) -> tuple[Any, Any, Any]:
    client = openai.OpenAI(base_url=proxy_url + "/v1", api_key="unused", max_retries=0)
    messages: Any = [{"role": "user", "content": question}]
    if not stream:
        reply = client.chat.completions.create(model="default", messages=messages, **options)
        return reply.choices[0].message.content, reply.choices[0].finish_reason, None
    pieces, reason = [], None
    events: Any = client.chat.completions.create(model="default", messages=messages, stream=True, **options)
    for event in events:
        if event.choices:
            pieces.append(event.choices[0].delta.content or "")
            reason = event.choices[0].finish_reason or reason
    return "".join(pieces), reason, pieces


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
@pytest.mark.parametrize("protocol", ["kms", "attested"])
def test_the_openai_sdks_stop_ends_the_answer_inside_the_enclave(deployment, serve, protocol, stream):
    backends, recording = deployment
    with serve(create_app(backends[protocol])) as proxy:
        before = len(recording.bodies)
        text, reason, _ = _ask(proxy.url, COUNT, stream=stream, stop=["5"])
        assert (text, reason) == ("count 1 2 3 4 ", "stop")
        # The echo engine's pieces are "3 " and "4 ": the match spans them, and nothing of it is sent.
        text, reason, pieces = _ask(proxy.url, COUNT, stream=stream, stop=["zz-never", "3 4"])
        assert (text, reason) == ("count 1 2 ", "stop")
        if stream:
            assert not any("3" in piece for piece in pieces)
        # A possible start held back, then released when the answer ends without the rest of it.
        text, reason, _ = _ask(proxy.url, COUNT, stream=stream, stop="8 9 10")
        assert (text, reason) == (COUNT, "stop")
        text, reason, _ = _ask(proxy.url, COUNT, stream=stream, stop=["5"], max_tokens=3)
        assert (text, reason) == ("count 1 2 ", "length")
        sent = b"".join(recording.bodies[before:])
    assert sent and b"zz-never" not in sent and b"8 9 10" not in sent  # the host never learns them


def test_the_proxy_refuses_more_stop_strings_than_openai_allows(deployment, serve):
    backends, _ = deployment
    with serve(create_app(backends["attested"])) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0)
        with pytest.raises(openai.BadRequestError) as info:
            client.chat.completions.create(
                model="default", messages=[{"role": "user", "content": "hi"}], stop=["a", "b", "c", "d", "e"]
            )
    assert "stop" in str(info.value)
