"""The enclave's side of the "attested" protocol: its session keys, its attestations, its requests.

At start-up the enclave makes one HPKE key pair per suite in its own memory and describes each in a
session descriptor (public key, model digest, config digest, protocol version). An ``attest`` frame
is answered with a fresh NSM document whose ``user_data`` is that descriptor's hash and whose nonce
is the client's, so a client that verifies the document knows the key lives in this measured
enclave and that the document was made for it just now. The keys never leave this process; a
restart (or ``rotate``) makes new ones, and clients holding an old descriptor are told
``attested_descriptor_unknown`` and re-attest. Nothing rotates on its own, so a client's verified
cache stays valid until the NSM leaf certificate expires.

An attested ``infer`` envelope is opened here (HPKE), then held to the same freshness window and
replay memory as the "kms" protocol, before the server gives it the single generation slot. The
server hands this module only the ``infer`` frames that name the "attested" protocol (its dispatch
table, enclave/server.py); the gateway does not know which protocol a request speaks.

Conversations: a request that carries the client's conversation secret gets a KV cache key derived
under a secret of its session (enclave/conversation_keys.py); ``rotate`` replaces a suite's session
(new key pair, new descriptor) and evicts every conversation the old one keyed. A request sealed
``one_shot`` gets none even with a secret: its client says no turn follows, so cells kept for it
would only cost the engine work and memory.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from nitro_llm.enclave.config import canonical_config
from nitro_llm.enclave.conversation_keys import Evict, SessionConversations
from nitro_llm.enclave.freshness import FreshnessGuard
from nitro_llm.protocol.attested import AttestedEnvelope, EnclaveSession, OpenedRequest
from nitro_llm.protocol.attested_errors import UnknownDescriptorError
from nitro_llm.protocol.attested_wire import SUITES, attestation_frame, read_attest_frame

log = logging.getLogger(__name__)


class Attester(Protocol):
    """The one NSM call this module needs (``nitro_llm.attestation.nsm.Nsm`` satisfies it)."""

    def attest(
        self, user_data: bytes | None = None, nonce: bytes | None = None, public_key: bytes | None = None
    ) -> bytes: ...


def config_digest(measured_config: Mapping[str, Any]) -> str:
    """SHA-256 of the same canonical JSON that is measured into PCR0/PCR2, so the descriptor names
    exactly the configuration the PCRs cover."""
    return hashlib.sha256(canonical_config(measured_config)).hexdigest()


def attest_session(
    nsm: Attester, sessions: Mapping[str, EnclaveSession], suite: str, nonce: bytes | None
) -> dict[str, Any]:
    """The ``attestation`` frame for ``suite``'s session: an NSM document made now, for this nonce,
    vouching for the session's descriptor (one definition for the per-enclave and the fleet keys)."""
    session = sessions.get(suite)
    if session is None:
        raise UnknownDescriptorError(f"this enclave offers no {suite} session")
    document = nsm.attest(user_data=session.user_data(), nonce=nonce)
    return attestation_frame(document, session.descriptor_bytes)


@dataclass(frozen=True)
class AttestedTurn:
    """An opened, fresh request, and the key its conversation's KV cells are kept under (None: the
    client sent no conversation secret, or sealed the request ``one_shot``; nothing is kept)."""

    opened: OpenedRequest
    cache_key: bytes | None = field(default=None, repr=False)


class AttestedHandler:
    """One :class:`EnclaveSession` per HPKE suite, until ``rotate`` replaces it."""

    def __init__(self, nsm: Attester, sessions: Iterable[EnclaveSession]) -> None:
        self._nsm = nsm
        self._sessions = {session.suite: session for session in sessions}
        if not self._sessions:
            raise ValueError("the attested protocol needs at least one session")
        self._lock = threading.Lock()
        self._evict: Evict = lambda _key: None
        self._conversations = {
            suite: SessionConversations(session.descriptor_hash) for suite, session in self._sessions.items()
        }

    @classmethod
    def generate(
        cls, nsm: Attester, *, model_digest: str, config_digest: str, suites: Iterable[str] = SUITES
    ) -> AttestedHandler:
        """Fresh key pairs, made inside the enclave: nothing outside it ever holds a private key."""
        sessions = [
            EnclaveSession.generate(model_digest=model_digest, config_digest=config_digest, suite=suite)
            for suite in suites
        ]
        for session in sessions:
            log.info("attested session suite=%s descriptor=%s", session.suite, session.descriptor_hash.hex())
        return cls(nsm, sessions)

    def descriptor_hashes(self) -> dict[str, str]:
        """Per suite, the descriptor hash clients will see in ``user_data`` (public, for logs and stats)."""
        with self._lock:
            return {suite: s.descriptor_hash.hex() for suite, s in sorted(self._sessions.items())}

    def attest(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """Answer an ``attest`` frame: a document made now, for this nonce, vouching for the session."""
        nonce, suite = read_attest_frame(frame)
        with self._lock:
            sessions = dict(self._sessions)
        return attest_session(self._nsm, sessions, suite, nonce)

    def open(self, raw_envelope: bytes, freshness: FreshnessGuard) -> AttestedTurn:
        """Open a sealed request and hold it to the freshness window and replay memory.

        The request id and timestamp are inside the HPKE ciphertext, so the checks follow the open;
        the id is claimed only once the request authenticated, so forgeries cannot fill the memory.
        Its conversation's cache key is derived last, for an authenticated, fresh request only.
        """
        envelope = AttestedEnvelope.from_cbor(raw_envelope)
        with self._lock:
            session = self._sessions.get(envelope.suite)
            conversations = self._conversations.get(envelope.suite)
        if session is None or conversations is None:
            raise UnknownDescriptorError(f"this enclave offers no {envelope.suite} session")
        opened = session.open_request(envelope)
        freshness.check_fresh(opened.request_id, opened.timestamp)
        freshness.claim(opened.request_id, opened.timestamp)
        if opened.conversation is None or opened.request.one_shot:
            return AttestedTurn(opened)
        return AttestedTurn(opened, conversations.key_for(opened.conversation))

    # -- conversations ---------------------------------------------------------------------------
    def evict_with(self, evict: Evict) -> None:
        """What forgetting a conversation does: the server passes its engine's ``evict``."""
        with self._lock:
            self._evict = evict
            for conversations in self._conversations.values():
                conversations.evict_with(evict)

    def conversations(self) -> int:
        """Conversation keys the current sessions remember (a count, for stats)."""
        with self._lock:
            return sum(len(c) for c in self._conversations.values())

    def rotate(self, suite: str) -> EnclaveSession:
        """Replace the suite's session with a fresh key pair; the old session's requests are refused
        from now on (clients re-attest) and every conversation it keyed is evicted and wiped."""
        with self._lock:
            old = self._sessions.get(suite)
            if old is None:
                raise UnknownDescriptorError(f"this enclave offers no {suite} session")
            descriptor = old.descriptor
            session = EnclaveSession.generate(
                model_digest=descriptor.model_digest, config_digest=descriptor.config_digest, suite=suite
            )
            retired = self._conversations[suite]
            conversations = SessionConversations(session.descriptor_hash)
            conversations.evict_with(self._evict)
            self._sessions[suite], self._conversations[suite] = session, conversations
        evicted = retired.retire()
        log.info(
            "attested session rotated suite=%s descriptor=%s conversations_evicted=%d",
            suite,
            session.descriptor_hash.hex(),
            evicted,
        )
        return session
