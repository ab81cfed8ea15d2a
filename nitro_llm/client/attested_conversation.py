"""The data owner's side of the "attested" protocol: verify the enclave here, then seal to it.

Before any byte of a question leaves this machine, the client fetches ``GET /v1/attestation`` with
a fresh nonce and checks the answer against the user's :class:`ClientPolicy`
(:func:`verify_attestation`: trust root, PCRs, debug mode, nonce, age, descriptor binding). Only a
session that passed is sealed to; a refused enclave gets nothing but the nonce. The verified session
is cached until its leaf certificate expires, so a chat costs one attestation, not one per turn.
Each request carries a fresh response key; the answer chunks are opened strictly in order, and a
stream that is cut, replayed or reordered raises instead of presenting a partial answer.

If the enclave says it no longer holds the key (restart, rotation) before answering, the client
forgets that session, verifies the new one and sends once more.

One object is one conversation: it draws a random conversation secret and seals it into each of its
turns, so the enclave can keep the conversation's KV cells between turns and prefill only what a
turn adds (the host never sees the secret: it travels inside the HPKE ciphertext). A caller that
sends unrelated chats through one object (the proxy) passes ``remember=False``: then no secret is
sent and the enclave keeps nothing. (The proxy gives each chat its caller named an object of its
own, sharing this one's HTTP client and verified sessions.)
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Unpack

import httpx

from nitro_llm.client.attested_verify import (
    SuiteNotAcceptedError,
    VerifiedEnclave,
    VerifiedEnclaveCache,
    new_nonce,
    verify_attestation,
)
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.client.wire import (
    MAX_ATTESTATION_BYTES,
    UNREACHABLE_CODES,
    AnswerChunk,
    WireRecord,
    fetch_attestation_bundle,
    probe_gateway,
    stream_answer,
)
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.attested import new_conversation, seal_request
from nitro_llm.protocol.attested_errors import UnknownDescriptorError
from nitro_llm.protocol.attested_wire import DEFAULT_SUITE, decode_attestation_bundle
from nitro_llm.protocol.messages import AnswerOptions, ChatRequest, chat_request

MAX_BUNDLE_BYTES = MAX_ATTESTATION_BYTES
VERIFIED_BY = "this machine (client policy)"


class AttestedConversation:
    """Questions to one gateway's enclave, each sealed to a session this client verified itself."""

    def __init__(
        self,
        gateway_url: str,
        policy: ClientPolicy,
        *,
        suite: str = DEFAULT_SUITE,
        http: httpx.Client | None = None,
        cache: VerifiedEnclaveCache | None = None,
        clock: Callable[[], dt.datetime] | None = None,
        remember: bool = True,
    ) -> None:
        """``remember``: let the enclave keep this conversation's state between turns (see above)."""
        if suite not in policy.accepted_suites:
            raise SuiteNotAcceptedError(f"the policy does not accept the {suite} suite")
        self.gateway_url = gateway_url.rstrip("/")
        self.policy = policy
        self.suite = suite
        self._http = http or httpx.Client(timeout=httpx.Timeout(10.0, read=300.0))
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))
        # "is None", not "or": an empty cache is falsy (it has a length), and a caller's must be kept.
        self._cache = cache if cache is not None else VerifiedEnclaveCache(clock=self._clock)
        self._lock = threading.Lock()
        self._conversation = new_conversation() if remember else None
        self.last_wire = WireRecord()

    @property
    def http(self) -> httpx.Client:
        """The HTTP client to the gateway, for a caller that opens more conversations to it (the
        proxy, one per named chat) over the same connections."""
        return self._http

    # --- verification ------------------------------------------------------------------------

    def verify(self, *, refresh: bool = False) -> VerifiedEnclave:
        """The verified session to seal to: cached, or fetched and verified now. Raises if refused."""
        with self._lock:
            if not refresh and (cached := self._cache.current(self.suite)) is not None:
                return cached
            enclave = self._fetch_and_verify()
            self._cache.put(enclave)
            return enclave

    def _fetch_and_verify(self) -> VerifiedEnclave:
        nonce = new_nonce()
        body = fetch_attestation_bundle(self._http, self.gateway_url, nonce, self.suite)
        document, descriptor = decode_attestation_bundle(body)
        return verify_attestation(document, descriptor, nonce, self.policy, at=self._clock())

    def describe(self) -> dict[str, Any]:
        """What was verified, for people (the web chat's panel, ``--verbose``); verifies first if
        nothing is verified yet, so it is never stale.

        ``verified``: True when this machine verified the enclave, False when it refused it, None
        when there was nothing to verify (the gateway or its enclave did not answer: a liveness
        problem, not a verdict). ``checks``: what verification checked (the policy's terms)."""
        try:
            enclave = self.verify()
        except NitroLLMError as exc:
            return {
                "protocol": "attested",
                "verified": None if exc.code in UNREACHABLE_CODES else False,
                "verified_by": VERIFIED_BY,
                "failure_code": exc.code,
                "failure_reason": f"[{exc.code}] {exc.message}",
                "checks": self.policy.checks(),
                "pcrs": {},
                "model_digest": None,
                "verified_at": None,
                "gateway": self.gateway_url,
                "unsafe": self.policy.unsafe_reasons(),
            }
        return {
            **enclave.describe(),
            "verified_by": VERIFIED_BY,
            "checks": self.policy.checks(),
            "failure_reason": None,
            "gateway": self.gateway_url,
        }

    def probe(self) -> str | None:
        """None when the gateway and its enclave answer; else why not (see ``probe_gateway``)."""
        return probe_gateway(self._http, self.gateway_url)

    # --- answering ---------------------------------------------------------------------------

    def stream(
        self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]
    ) -> Iterator[AnswerChunk]:
        """Verify (or reuse the verified session), seal, send, and yield the answer as it comes.

        Nothing is sent unless verification passed. Raises a typed error on any refusal and on a
        stream cut short, reordered or tampered with.
        """
        request = chat_request(messages, **options)
        enclave = self.verify()
        answered = False
        try:
            for chunk in self._exchange(enclave, request):
                answered = True
                yield chunk
        except UnknownDescriptorError:
            if answered:
                raise
            # The enclave restarted or rotated its key and refused before answering: forget the
            # old session, verify the new one, and send once more.
            self._cache.forget(enclave.descriptor_hash)
            yield from self._exchange(self.verify(refresh=True), request)

    def ask(self, messages: list[Mapping[str, str]], **options: Unpack[AnswerOptions]) -> str:
        return "".join(chunk.text for chunk in self.stream(messages, **options))

    def _exchange(self, enclave: VerifiedEnclave, request: ChatRequest) -> Iterator[AnswerChunk]:
        # A one-shot turn is never continued: its conversation secret would key nothing.
        conversation = None if request.one_shot else self._conversation
        sealed = seal_request(enclave.descriptor, request, conversation=conversation)
        body = sealed.envelope.to_cbor()
        self.last_wire = wire = WireRecord(envelope=body)
        yield from stream_answer(self._http, self.gateway_url, body, sealed.response_opener(), wire)

    def close(self) -> None:
        self._http.close()
