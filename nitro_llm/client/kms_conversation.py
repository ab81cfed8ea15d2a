"""The data owner's side of the "kms" protocol: seal a question, stream the answer open.

One data key per conversation (one KMS GenerateDataKey on the client, and — thanks to the enclave's
key cache — one KMS Decrypt in the enclave for the whole chat), a fresh request id, timestamp and
nonce per turn. Everything is decrypted here; the gateway and the network see ciphertext only.

Thread-safe: the proxy may relay two turns of one named chat at once through one object; they
draw one data key between them (a second key for the same conversation id would be sealed under
by one turn while the other's answer was opened with the first).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping
from typing import Any, Unpack

import httpx
from botocore.exceptions import BotoCoreError, ClientError

from nitro_llm.client.config import ClientConfig
from nitro_llm.client.errors import KmsRefused, KmsUnreachable
from nitro_llm.client.wire import (  # AnswerChunk and WireRecord are re-exported: callers import them here
    AnswerChunk,
    WireRecord,
    stream_answer,
)
from nitro_llm.kms.client import make_kms_client
from nitro_llm.protocol.kms_envelope import KmsEnvelope, KmsHeader, ResponseOpener, new_id, seal_request
from nitro_llm.protocol.messages import AnswerOptions, chat_request

__all__ = ["AnswerChunk", "KmsConversation", "WireRecord"]


class KmsConversation:
    """A multi-turn conversation sealed with one KMS data key."""

    def __init__(self, config: ClientConfig, *, http: httpx.Client | None = None, kms: Any = None) -> None:
        self.config = config
        self.conversation_id = new_id()
        self._kms = kms or make_kms_client(config.kms_endpoint, config.credentials, config.region)
        self._http = http or config.gateway_http()
        self._data_key: bytes | None = None
        self._edk: bytes = b""
        self._key_lock = threading.Lock()
        self.last_wire = WireRecord()

    def _ensure_data_key(self, header: KmsHeader) -> None:
        with self._key_lock:
            if self._data_key is not None:
                return
            try:
                reply = self._kms.generate_data_key(
                    KeyId=self.config.key_id, KeySpec="AES_256", EncryptionContext=header.encryption_context()
                )
            except BotoCoreError as exc:  # no answer (after botocore's own bounded retries)
                raise KmsUnreachable(f"KMS could not be reached ({type(exc).__name__})") from None
            except ClientError as exc:  # only AWS's error code: its message may quote the request
                code = str(exc.response.get("Error", {}).get("Code", "Unknown"))
                raise KmsRefused(f"KMS refused GenerateDataKey: {code}") from None
            self._data_key, self._edk = reply["Plaintext"], reply["CiphertextBlob"]

    def seal(
        self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]
    ) -> tuple[KmsHeader, KmsEnvelope]:
        header = KmsHeader.new(
            model=self.config.model, conversation_id=self.conversation_id, key_id=self.config.key_id
        )
        self._ensure_data_key(header)
        assert self._data_key is not None
        return header, seal_request(self._data_key, header, chat_request(messages, **options), edk=self._edk)

    def stream(
        self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]
    ) -> Iterator[AnswerChunk]:
        """Send the conversation so far; yield the answer as it is generated.

        Raises a typed error on any refusal, and on a stream cut short, reordered or tampered with —
        a partial answer is never presented as a whole one.
        """
        header, envelope = self.seal(messages, **options)
        body = envelope.to_cbor()
        assert self._data_key is not None
        opener = ResponseOpener(self._data_key, header)
        self.last_wire = WireRecord(envelope=body, header=header.to_map())
        yield from stream_answer(
            self._http, self.config.gateway_url, body, opener, self.last_wire, self.config.auth_headers()
        )

    def ask(self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]) -> str:
        return "".join(chunk.text for chunk in self.stream(messages, **options))

    def close(self) -> None:
        self._http.close()
