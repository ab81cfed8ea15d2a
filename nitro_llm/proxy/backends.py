"""The two real backends behind the proxy: "kms" and "attested".

``KmsBackend`` wraps :class:`~nitro_llm.client.kms_conversation.KmsConversation`: one conversation
(one data key, one conversation id) per request, so that separate chats going through one proxy
cannot be linked by the gateway; the HTTP and KMS clients are shared to keep that cheap.

``AttestedBackend`` wraps :class:`~nitro_llm.client.attested_conversation.AttestedConversation`,
which verifies the enclave on this machine before sealing anything and caches the verified session
until its leaf certificate expires. When verification fails nothing is sent, and ``describe()`` says
why (the web chat turns red).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx

from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.attested_verify import VerifiedEnclave, VerifiedEnclaveCache
from nitro_llm.client.config import ClientConfig
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.protocol.attested_wire import DEFAULT_SUITE
from nitro_llm.proxy.backend import BackendChunk


class KmsBackend:
    """The "kms" protocol: KMS's key policy, not this machine, checks the enclave's attestation."""

    protocol = "kms"

    def __init__(
        self,
        config: ClientConfig,
        *,
        http: httpx.Client | None = None,
        kms: Any = None,
        model_id: str | None = None,
    ) -> None:
        self.config = config
        self.model_id = model_id or config.model
        self._http = http
        self._kms = kms
        self._lock = threading.Lock()

    def _clients(self) -> tuple[httpx.Client, Any]:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(timeout=httpx.Timeout(10.0, read=300.0))
            if self._kms is None:
                from nitro_llm.kms.client import make_kms_client

                self._kms = make_kms_client(
                    self.config.kms_endpoint, self.config.credentials, self.config.region
                )
            return self._http, self._kms

    def stream(
        self, messages: list[Mapping[str, str]], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Iterator[BackendChunk]:
        from nitro_llm.client.kms_conversation import KmsConversation

        http, kms = self._clients()
        conversation = KmsConversation(self.config, http=http, kms=kms)
        for chunk in conversation.stream(messages, max_tokens=max_tokens, temperature=temperature, seed=seed):
            if chunk.final:
                yield BackendChunk(chunk.text, chunk.finish_reason or "stop", _usage(chunk.usage))
            else:
                yield BackendChunk(chunk.text)

    def describe(self) -> dict[str, Any]:
        return {
            "protocol": "kms",
            "verified": True,
            "verified_by": "KMS key policy (kms:RecipientAttestation PCR conditions)",
            "failure_reason": None,
            "pcrs": {},
            "model_digest": None,
            "verified_at": None,
            "gateway": self.config.gateway_url,
            "note": (
                "In the kms protocol AWS KMS releases the data key only to an enclave whose attestation "
                "matches the key policy; this machine does not see the attestation. "
                "Start the proxy with --protocol attested to verify the enclave here."
            ),
        }

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


class AttestedBackend:
    """The "attested" protocol: :class:`AttestedConversation` verifies the enclave on this machine
    and seals to the key it attested; this adapts it to the proxy's seam."""

    protocol = "attested"

    def __init__(
        self,
        gateway_url: str,
        policy: ClientPolicy,
        *,
        suite: str = DEFAULT_SUITE,
        model_id: str = "default",
        http: httpx.Client | None = None,
        cache: VerifiedEnclaveCache | None = None,
        clock: Callable[[], dt.datetime] | None = None,
    ) -> None:
        self.conversation = AttestedConversation(
            gateway_url, policy, suite=suite, http=http, cache=cache, clock=clock
        )
        self.gateway_url = self.conversation.gateway_url
        self.policy = policy
        self.suite = suite
        self.model_id = model_id

    def verify(self, *, refresh: bool = False) -> VerifiedEnclave:
        return self.conversation.verify(refresh=refresh)

    def stream(
        self, messages: list[Mapping[str, str]], *, max_tokens: int, temperature: float, seed: int | None
    ) -> Iterator[BackendChunk]:
        chunks = self.conversation.stream(messages, max_tokens=max_tokens, temperature=temperature, seed=seed)
        for chunk in chunks:
            if chunk.final:
                yield BackendChunk(chunk.text, chunk.finish_reason or "stop", _usage(chunk.usage))
            else:
                yield BackendChunk(chunk.text)

    def describe(self) -> dict[str, Any]:
        return self.conversation.describe()

    def close(self) -> None:
        self.conversation.close()


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    if not isinstance(usage, Mapping):
        return None
    return {
        k: v
        for k, v in usage.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }
