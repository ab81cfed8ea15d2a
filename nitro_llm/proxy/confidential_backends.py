"""The two real backends behind the proxy: "kms" and "attested".

``KmsBackend`` wraps :class:`~nitro_llm.client.kms_conversation.KmsConversation`: one conversation
(one data key, one conversation id) per request, so that separate chats going through one proxy
cannot be linked by the gateway; the HTTP and KMS clients are shared to keep that cheap. Such a
conversation never has a second turn, so it is sealed ``one_shot``: the enclave then neither caches
its data key nor keeps (and settles) its KV cells for a turn that never comes. A request
that names its chat (proxy/conversations.py) continues that name's conversation instead: one data key
and conversation id per name, so the enclave's cache (keyed by them) serves its later turns.

``AttestedBackend`` wraps :class:`~nitro_llm.client.attested_conversation.AttestedConversation`,
which verifies the enclave on this machine before sealing anything and caches the verified session
until its leaf certificate expires. When verification fails nothing is sent, and ``describe()`` says
why (the web chat turns red). When the gateway or its enclave stops answering, the cached sessions
are forgotten: whatever answers next (a restarted stack, a restarted enclave) has new keys and is
verified anew, and ``describe()`` reports the last verification as ``last_verified_at`` only. It
serves every chat the proxy relays, which an OpenAI request does not tell apart, so it sends no
conversation secret (``remember=False``) and seals them ``one_shot``: the enclave keeps no KV cells
for them, rather than one set shared by unrelated chats. A request that names its chat goes through
that name's own conversation (``remember=True``: a secret drawn for the name alone), which shares the
verified sessions and the HTTP client with the others.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, TypeVar, Unpack

import httpx

from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.attested_verify import VerifiedEnclave, VerifiedEnclaveCache
from nitro_llm.client.config import ClientConfig
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.client.wire import UNREACHABLE_CODES, AnswerChunk, probe_gateway
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.attested_wire import DEFAULT_SUITE
from nitro_llm.protocol.messages import AnswerOptions
from nitro_llm.proxy.backend_seam import BackendChunk
from nitro_llm.proxy.conversations import ConversationTable

if TYPE_CHECKING:
    from nitro_llm.client.kms_conversation import KmsConversation

T = TypeVar("T")


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
        self.named: ConversationTable[KmsConversation] = ConversationTable(self._new_conversation)
        """The conversations of named chats (proxy/conversations.py)."""

    def _http_client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = self.config.gateway_http()
            return self._http

    def _clients(self) -> tuple[httpx.Client, Any]:
        http = self._http_client()
        with self._lock:
            if self._kms is None:
                from nitro_llm.kms.client import make_kms_client

                self._kms = make_kms_client(
                    self.config.kms_endpoint, self.config.credentials, self.config.region
                )
            return http, self._kms

    def _new_conversation(self) -> KmsConversation:
        """A new data key (drawn on its first turn) and a random conversation id."""
        from nitro_llm.client.kms_conversation import KmsConversation

        http, kms = self._clients()
        return KmsConversation(self.config, http=http, kms=kms)

    def stream(
        self,
        messages: list[Mapping[str, str]],
        *,
        conversation: str | None = None,
        **options: Unpack[AnswerOptions],
    ) -> Iterator[BackendChunk]:
        """A conversation of its own (a new data key, never used again), or the named chat's (see
        the module docstring)."""
        chat = _chat_for(conversation, self._new_conversation, self.named, options)
        yield from _backend_chunks(chat.stream(messages, **options))

    def describe(self) -> dict[str, Any]:
        """Nothing is verified on this machine in this protocol: ``verified`` is None (neither a pass
        nor a refusal), and ``verified_by`` names who does check the enclave."""
        return {
            "protocol": "kms",
            "verified": None,
            "verified_by": "not this machine: the KMS key policy (kms:RecipientAttestation PCR conditions)",
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

    def probe(self) -> str | None:
        """None when the gateway and its enclave answer; else why not (see ``probe_gateway``)."""
        return probe_gateway(self._http_client(), self.config.gateway_url, headers=self.config.auth_headers())

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
        self._cache = cache if cache is not None else VerifiedEnclaveCache(clock=clock)
        self.conversation = AttestedConversation(
            gateway_url, policy, suite=suite, http=http, cache=self._cache, clock=clock, remember=False
        )
        self._clock = clock
        self.named: ConversationTable[AttestedConversation] = ConversationTable(self._new_conversation)
        """The conversations of named chats, each with its own secret (proxy/conversations.py)."""
        self.gateway_url = self.conversation.gateway_url
        self.policy = policy
        self.suite = suite
        self.model_id = model_id
        self._last_verified_at: str | None = None
        self._lock = threading.Lock()

    def verify(self, *, refresh: bool = False) -> VerifiedEnclave:
        return self.conversation.verify(refresh=refresh)

    def forget_sessions(self) -> None:
        """Nothing answers: no session verified so far may be sealed to again (module docstring)."""
        self._cache.clear()

    def _new_conversation(self) -> AttestedConversation:
        """A new conversation secret, sealed to the sessions every conversation here verified; over
        the shared HTTP client, so no connection and no verification is per chat."""
        return AttestedConversation(
            self.gateway_url,
            self.policy,
            suite=self.suite,
            http=self.conversation.http,
            cache=self._cache,
            clock=self._clock,
            remember=True,
        )

    def stream(
        self,
        messages: list[Mapping[str, str]],
        *,
        conversation: str | None = None,
        **options: Unpack[AnswerOptions],
    ) -> Iterator[BackendChunk]:
        """Unnamed: no conversation secret, nothing kept. Named: that name's conversation."""
        chat = _chat_for(conversation, lambda: self.conversation, self.named, options)
        try:
            yield from _backend_chunks(chat.stream(messages, **options))
        except NitroLLMError as exc:
            if exc.code in UNREACHABLE_CODES:
                self.forget_sessions()
            raise

    def describe(self) -> dict[str, Any]:
        """The conversation's facts, plus ``last_verified_at``: when this machine last verified an
        enclave behind this gateway (kept when that session was forgotten, to say what was checked)."""
        facts = self.conversation.describe()
        with self._lock:
            if facts.get("verified") is True and isinstance(facts.get("verified_at"), str):
                self._last_verified_at = facts["verified_at"]
            facts["last_verified_at"] = self._last_verified_at
        return facts

    def probe(self) -> str | None:
        reason = self.conversation.probe()
        if reason is not None:
            self.forget_sessions()
        return reason

    def close(self) -> None:
        self.conversation.close()


def _chat_for(
    conversation: str | None, unnamed: Callable[[], T], named: ConversationTable[T], options: AnswerOptions
) -> T:
    """The conversation a request goes through: the named chat's, or for an unnamed request the
    ``unnamed`` one, sealed ``one_shot`` (in the request itself: nothing can continue it, so the
    enclave keeps neither a data key nor KV cells for it)."""
    if conversation is not None:
        return named.get(conversation)
    options["one_shot"] = True
    return unnamed()


def _backend_chunks(chunks: Iterator[AnswerChunk]) -> Iterator[BackendChunk]:
    """A client's answer chunks as the proxy's backend chunks (the final one with its usage)."""
    for chunk in chunks:
        if chunk.final:
            yield BackendChunk(chunk.text, chunk.finish_reason or "stop", _usage(chunk.usage))
        else:
            yield BackendChunk(chunk.text)


def _usage(usage: Mapping[str, Any] | None) -> dict[str, int] | None:
    if not isinstance(usage, Mapping):
        return None
    return {
        k: v
        for k, v in usage.items()
        if isinstance(k, str) and isinstance(v, int) and not isinstance(v, bool)
    }
