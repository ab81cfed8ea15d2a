"""The enclave's side of the "attested" protocol: its session keys, its attestations, its requests.

At start-up the enclave makes one HPKE key pair per suite in its own memory and describes each in a
session descriptor (public key, model digest, config digest, protocol version). An ``attest`` frame
is answered with a fresh NSM document whose ``user_data`` is that descriptor's hash and whose nonce
is the client's, so a client that verifies the document knows the key lives in this measured
enclave and that the document was made for it just now. The keys never leave this process; a
restart makes new ones, and clients holding an old descriptor are told ``attested_descriptor_unknown``
and re-attest. The descriptors do not change while the process runs, so a client's verified cache
stays valid until the NSM leaf certificate expires.

An attested ``infer`` envelope is opened here (HPKE), then held to the same freshness window and
replay memory as the "kms" protocol, before the server gives it the single generation slot. The
server hands this module only the ``infer`` frames that name the "attested" protocol (its dispatch
table, enclave/server.py); the gateway does not know which protocol a request speaks.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

from nitro_llm.enclave.config import canonical_config
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


class AttestedHandler:
    """One :class:`EnclaveSession` per HPKE suite, for the life of the process."""

    def __init__(self, nsm: Attester, sessions: Iterable[EnclaveSession]) -> None:
        self._nsm = nsm
        self._sessions = {session.suite: session for session in sessions}
        if not self._sessions:
            raise ValueError("the attested protocol needs at least one session")

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
        return {suite: s.descriptor_hash.hex() for suite, s in sorted(self._sessions.items())}

    def attest(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """Answer an ``attest`` frame: a document made now, for this nonce, vouching for the session."""
        nonce, suite = read_attest_frame(frame)
        session = self._sessions.get(suite)
        if session is None:
            raise UnknownDescriptorError(f"this enclave offers no {suite} session")
        document = self._nsm.attest(user_data=session.user_data(), nonce=nonce)
        return attestation_frame(document, session.descriptor_bytes)

    def open(self, raw_envelope: bytes, freshness: FreshnessGuard) -> OpenedRequest:
        """Open a sealed request and hold it to the freshness window and replay memory.

        The request id and timestamp are inside the HPKE ciphertext, so the checks follow the open;
        the id is claimed only once the request authenticated, so forgeries cannot fill the memory.
        """
        envelope = AttestedEnvelope.from_cbor(raw_envelope)
        session = self._sessions.get(envelope.suite)
        if session is None:
            raise UnknownDescriptorError(f"this enclave offers no {envelope.suite} session")
        opened = session.open_request(envelope)
        freshness.check_fresh(opened.request_id, opened.timestamp)
        freshness.claim(opened.request_id, opened.timestamp)
        return opened
