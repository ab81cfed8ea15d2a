"""An in-process enclave server with the echo engine, the real emulated NSM and a fake KMS seam.

The fake KMS plays AWS's part of Decrypt-with-Recipient faithfully enough to test the enclave: it
checks the encryption context and the Recipient's algorithm, reads the public key out of the real
attestation document and answers with real CMS EnvelopedData for it.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.serialization import load_der_public_key

from nitro_llm.attestation import parse_document
from nitro_llm.enclave.attested_handler import AttestedHandler, config_digest
from nitro_llm.enclave.config import EnclaveConfig
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.enclave.server import EnclaveServer
from nitro_llm.kms.cms import build_enveloped_data, open_enveloped_data
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsHeader, ResponseOpener, new_id, seal_request
from nitro_llm.transport import connect, listen
from nitro_llm_dev.engines.echo import EchoEngine
from nitro_llm_dev.nsm import open_emulated_nsm
from nitro_llm_dev.nsm.devca import DevCA


class FakeClientError(Exception):
    """Shaped like botocore's ClientError: the enclave reads ``response["Error"]["Code"]``."""

    def __init__(self, code: str):
        super().__init__(code)
        self.response = {"Error": {"Code": code, "Message": "denied"}}


@dataclass
class FakeKms:
    keys: dict[bytes, tuple[bytes, dict[str, str]]] = field(default_factory=dict)
    calls: list[dict] = field(default_factory=list)
    deny: str | None = None
    plaintext_too: bool = False

    def generate_data_key(self, conversation_id: str) -> tuple[bytes, bytes]:
        data_key, edk = os.urandom(32), b"edk-" + os.urandom(60)
        self.keys[edk] = (data_key, {"nitro-llm:conversation": conversation_id})
        return data_key, edk

    def decrypt(self, **kwargs):
        self.calls.append(kwargs)
        if self.deny:
            raise FakeClientError(self.deny)
        recipient = kwargs["Recipient"]
        assert recipient["KeyEncryptionAlgorithm"] == "RSAES_OAEP_SHA_256"
        entry = self.keys.get(kwargs["CiphertextBlob"])
        if entry is None:
            raise FakeClientError("InvalidCiphertextException")
        data_key, context = entry
        if kwargs.get("EncryptionContext") != context:
            raise FakeClientError("InvalidCiphertextException")
        public_key = load_der_public_key(parse_document(recipient["AttestationDocument"]).public_key)
        out = {"KeyId": "k", "CiphertextForRecipient": build_enveloped_data(data_key, public_key)}
        if self.plaintext_too:
            out["Plaintext"] = data_key
        return out


@dataclass
class Enclave:
    address: str
    server: EnclaveServer
    kms: FakeKms
    key_release: KeyRelease
    attested: AttestedHandler | None = None

    def call(self, frame: dict, timeout: float = 10.0) -> list[dict]:
        """Send one frame on a new connection; return every frame until the connection ends."""
        return self.call_raw(encode_frame(frame), timeout)

    def call_raw(self, data: bytes, timeout: float = 10.0) -> list[dict]:
        with connect(self.address, timeout) as sock:
            sock.sendall(data)
            sock.shutdown(socket.SHUT_WR)
            out = []
            while (frame := read_frame(sock)) is not None:
                out.append(frame)
            return out

    def give_credentials(self) -> None:
        assert self.call(
            frame_kinds.credentials_frame(frame_kinds.Credentials("AKIA-ENCLAVE", "secret", "token"))
        ) == [{"t": "ok"}]

    def stats(self) -> dict:
        (pong,) = self.call(frame_kinds.ping_frame())
        assert pong["t"] == "pong"
        return pong


@dataclass
class Conversation:
    """What a client does: one data key per conversation, a fresh header per turn."""

    kms: FakeKms
    conversation_id: str = field(default_factory=new_id)
    data_key: bytes = b""
    edk: bytes = b""

    def __post_init__(self):
        self.data_key, self.edk = self.kms.generate_data_key(self.conversation_id)

    def seal(self, messages, *, max_tokens=64, timestamp_ms=None, model="default", one_shot=False, **header):
        h = KmsHeader.new(
            model=model, conversation_id=self.conversation_id, key_id="alias/test", now_ms=timestamp_ms
        )
        if header:
            h = KmsHeader(**{**h.to_map(), **header})
        request = {"messages": messages, "max_tokens": max_tokens, "temperature": 0.0}
        if one_shot:
            request["one_shot"] = True
        return h, seal_request(self.data_key, h, request, edk=self.edk)

    def ask(self, enclave: Enclave, text: str, **kw) -> str:
        header, envelope = self.seal([{"role": "user", "content": text}], **kw)
        return self.read_answer(header, enclave.call(frame_kinds.infer_frame(envelope.to_cbor())))

    def read_answer(self, header, replies) -> str:
        if replies and replies[-1]["t"] == "error":
            raise frame_kinds.read_error(replies[-1])
        opener = ResponseOpener(self.data_key, header)
        text = "".join(opener.open(f)["text"] for f in replies)
        opener.finish()
        return text


def start_enclave(
    tmp_path: Path, *, config: EnclaveConfig | None = None, engine=None, kms=None, attested: bool = False
) -> Enclave:
    """``attested``: also serve the attested protocol (a real ``AttestedHandler``, fresh sessions)."""
    kms = kms or FakeKms()
    nsm = open_emulated_nsm(
        ca=DevCA.load_or_create(tmp_path / "dev-ca"),
        pcrs={0: b"\x01" * 48, 1: b"\x02" * 48, 2: b"\x03" * 48},
    )
    key_release = KeyRelease(
        nsm=nsm, kms_client_factory=lambda _creds: kms, open_envelope=open_enveloped_data
    )
    config = config or EnclaveConfig(engine="echo")
    handler = None
    if attested:
        handler = AttestedHandler.generate(
            nsm, model_digest="ab" * 32, config_digest=config_digest(config.measured())
        )
    server = EnclaveServer(
        engine=engine or EchoEngine(),
        key_release=key_release,
        config=config,
        io_timeout=5.0,
        attested=handler,
    )
    address = f"unix:{tmp_path / 'enclave.sock'}"
    server.start(listen(address))
    return Enclave(address, server, kms, key_release, handler)


@pytest.fixture
def enclave(tmp_path):
    e = start_enclave(tmp_path)
    yield e
    e.server.stop()


@pytest.fixture
def conversation(enclave):
    return Conversation(enclave.kms)


@pytest.fixture
def make_enclave(tmp_path):
    """Factory for enclaves with other configs or engines; all are stopped after the test."""
    started = []

    def make(**kw):
        sub = tmp_path / f"e{len(started)}"
        sub.mkdir()
        e = start_enclave(sub, **kw)
        started.append(e)
        return e

    yield make
    for e in started:
        e.server.stop()


@pytest.fixture
def new_conversation():
    return Conversation
