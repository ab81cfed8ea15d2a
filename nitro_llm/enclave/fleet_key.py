"""The enclave's side of the fleet key: obtain it from KMS, attest it, open requests sealed to it.

An enclave measured with ``--fleet-kms-key ARN`` makes no session key of its own. Its gateway hands
it the fleet key file as a ``fleet_keys`` frame (nitro_llm/fleet/key_file.py); for each generation
the enclave asks KMS to ``Decrypt`` the wrapped secret with a ``Recipient`` (its attestation
document), exactly as it obtains a data key (enclave/key_release.py), so KMS releases the secret only
to the PCRs the fleet key policy pins. The HPKE key pairs are then derived from the secret in this
process (``HpkeKeyPair.derive``): every replica derives the same pairs, so every replica's document
vouches for the same descriptor, and a client's verification holds for whichever replica answers.

What the parent relays is checked, not trusted: the file must name the measured KMS key, KMS must
say that key released the secret (a secret from any other key, one a hostile parent could know, is
refused), the secret's encryption context names its generation, and a running enclave never goes
back to an older generation than one it installed. Until it holds a current generation, the enclave
serves nothing: attest and infer frames get ``fleet_key_unavailable`` (retryable), and its pong says
so, which turns its gateway's /healthz to 503 and a balancer away from it.

The current generation is attested; the previous one, during a rotation's overlap, is still opened.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nitro_llm.enclave.attested_handler import AttestedTurn, Attester, attest_session
from nitro_llm.enclave.conversation_keys import Evict, SessionConversations
from nitro_llm.enclave.freshness import FreshnessGuard
from nitro_llm.enclave.key_release import KeyRelease
from nitro_llm.errors import NitroLLMError
from nitro_llm.fleet.errors import FleetKeyRefusedError, FleetKeyUnavailableError
from nitro_llm.fleet.key_file import SECRET_SIZE, FleetKeyFile, FleetKeyGeneration, read_fleet_keys_frame
from nitro_llm.protocol.attested import AttestedEnvelope, EnclaveSession
from nitro_llm.protocol.attested_errors import UnknownDescriptorError
from nitro_llm.protocol.attested_wire import SUITES, read_attest_frame
from nitro_llm.protocol.frame_kinds import ok_frame
from nitro_llm.protocol.hpke_suite import HpkeKeyPair

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class _Held:
    """One installed generation: the file's entry, the sessions derived from its secret, and per
    suite the conversation keys this replica issued under it (its own secret: caches are per replica)."""

    generation: FleetKeyGeneration
    sessions: Mapping[str, EnclaveSession] = field(repr=False)
    conversations: Mapping[str, SessionConversations] = field(repr=False)

    def same_as(self, other: FleetKeyGeneration) -> bool:
        return self.generation.to_frame() == other.to_frame()


def derive_sessions(
    secret: bytes | bytearray,
    generation: FleetKeyGeneration,
    *,
    model_digest: str,
    config_digest: str,
    suites: Iterable[str] = SUITES,
) -> dict[str, EnclaveSession]:
    """One session per suite, from the generation's secret: the same on every replica."""
    context = f"{generation.id}/{generation.generation}".encode()
    return {
        suite: EnclaveSession(
            HpkeKeyPair.derive(suite, bytes(secret), context=context),
            model_digest=model_digest,
            config_digest=config_digest,
        )
        for suite in suites
    }


class FleetAttestedHandler:
    """The attested protocol's handler for a fleet replica (``AttestedHandler``'s interface, plus
    ``install``, ``require_ready`` and ``status`` for the server)."""

    def __init__(
        self,
        nsm: Attester,
        release: KeyRelease,  # KMS Decrypt with Recipient (tests give a stand-in with its release())
        *,
        kms_key_arn: str,
        model_digest: str,
        config_digest: str,
        suites: Iterable[str] = SUITES,
    ) -> None:
        self._nsm = nsm
        self._release = release
        self._kms_key_arn = kms_key_arn
        self._model_digest = model_digest
        self._config_digest = config_digest
        self._suites = tuple(suites)
        self._lock = threading.Lock()  # guards the installed generations
        self._install_lock = threading.Lock()  # one install at a time: each may wait on KMS
        self._current: _Held | None = None
        self._previous: _Held | None = None
        self._newest: FleetKeyGeneration | None = None  # the newest current ever installed
        self._last_error: str | None = None
        self._evict: Evict = lambda _key: None

    # -- the gateway's fleet_keys frame --------------------------------------------------------
    def install(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """Obtain (or keep) each generation the file lists, then switch to them at once."""
        keys = read_fleet_keys_frame(frame)
        with self._install_lock:
            try:
                self._check(keys)
                current = self._obtain(keys.current)
                previous = self._obtain(keys.previous) if keys.previous is not None else None
            except NitroLLMError as exc:
                with self._lock:
                    self._last_error = exc.code
                log.warning("fleet key install refused code=%s", exc.code)
                raise
            with self._lock:
                dropped = [
                    held
                    for held in (self._current, self._previous)
                    if held is not None and held is not current and held is not previous
                ]
                self._current, self._previous = current, previous
                self._newest = keys.current
                self._last_error = None
        for held in dropped:  # a retired generation's conversations go with it
            for conversations in held.conversations.values():
                conversations.retire()
        log.info(
            "fleet key installed current=%s generation=%d previous=%s descriptors=%s",
            keys.current.id,
            keys.current.generation,
            keys.previous.id if keys.previous is not None else "-",
            ",".join(f"{s}:{h}" for s, h in self.descriptor_hashes().items()),
        )
        return ok_frame()

    def _check(self, keys: FleetKeyFile) -> None:
        if keys.kms_key_arn != self._kms_key_arn:
            raise FleetKeyRefusedError(
                "the fleet key file names another KMS key than this enclave's measured one"
            )
        newest = self._newest
        if newest is not None and (
            keys.current.generation < newest.generation
            or (keys.current.generation == newest.generation and keys.current.id != newest.id)
        ):
            raise FleetKeyRefusedError(
                f"fleet key generation {keys.current.generation} ({keys.current.id}) is not newer than the"
                f" installed generation {newest.generation} ({newest.id}): rollback refused"
            )

    def _obtain(self, generation: FleetKeyGeneration) -> _Held:
        with self._lock:
            for held in (self._current, self._previous):
                if held is not None and held.same_as(generation):
                    return held  # already released and derived: no KMS call
        released = self._release.release(  # KeyId: KMS itself refuses a blob of another key
            generation.wrapped,
            generation.encryption_context(),
            request_id=f"fleet-key-{generation.id}",
            key_id=self._kms_key_arn,
        )
        if released.key_id != self._kms_key_arn:  # and so does this enclave, whatever answered
            raise FleetKeyRefusedError(
                f"fleet key {generation.id} was released by another KMS key than the measured one"
            )
        secret = bytearray(released.plaintext)
        try:
            if len(secret) != SECRET_SIZE:
                raise FleetKeyRefusedError(f"fleet key {generation.id} is not a {SECRET_SIZE}-byte secret")
            sessions = derive_sessions(
                secret,
                generation,
                model_digest=self._model_digest,
                config_digest=self._config_digest,
                suites=self._suites,
            )
        finally:
            secret[:] = bytes(len(secret))  # best effort: the KMS answer's own copy is not ours to wipe
        conversations = {suite: SessionConversations(s.descriptor_hash) for suite, s in sessions.items()}
        with self._lock:
            for tracker in conversations.values():
                tracker.evict_with(self._evict)
        return _Held(generation, sessions, conversations)

    # -- what the server asks ------------------------------------------------------------------
    def require_ready(self) -> None:
        """Raise unless a current generation is installed: a fleet replica serves nothing without it."""
        with self._lock:
            ready = self._current is not None
            error = self._last_error
        if not ready:
            why = f" (last attempt: {error})" if error else ""
            raise FleetKeyUnavailableError(f"this replica does not hold the fleet key{why}")

    def status(self) -> dict[str, Any]:
        """For the pong frame: ids and generations only."""
        with self._lock:
            current, previous, error = self._current, self._previous, self._last_error
        state = "ready" if current is not None else "refused" if error else "missing"
        return {
            "state": state,
            "current": current.generation.id if current else None,
            "generation": current.generation.generation if current else None,
            "previous": previous.generation.id if previous else None,
            "error": error,
        }

    def evict_with(self, evict: Evict) -> None:
        """What forgetting a conversation does: the server passes its engine's ``evict``."""
        with self._lock:
            self._evict = evict
            for held in (self._current, self._previous):
                for tracker in held.conversations.values() if held is not None else ():
                    tracker.evict_with(evict)

    def conversations(self) -> int:
        """Conversation keys the held generations remember (a count, for stats)."""
        with self._lock:
            held = [h for h in (self._current, self._previous) if h is not None]
        return sum(len(c) for h in held for c in h.conversations.values())

    def descriptor_hashes(self) -> dict[str, str]:
        """Per suite, the current generation's descriptor hash (what every replica's user_data holds)."""
        with self._lock:
            current = self._current
        if current is None:
            return {}
        return {suite: s.descriptor_hash.hex() for suite, s in sorted(current.sessions.items())}

    def attest(self, frame: Mapping[str, Any]) -> dict[str, Any]:
        """A document made now, for this nonce, vouching for the current generation's session."""
        nonce, suite = read_attest_frame(frame)
        with self._lock:
            current = self._current
        if current is None:
            raise FleetKeyUnavailableError("this replica does not hold the fleet key")
        return attest_session(self._nsm, current.sessions, suite, nonce)

    def open(self, raw_envelope: bytes, freshness: FreshnessGuard) -> AttestedTurn:
        """Open a request sealed to the current or (during an overlap) the previous generation; its
        conversation's KV cache key as ``AttestedHandler.open`` derives it."""
        envelope = AttestedEnvelope.from_cbor(raw_envelope)
        with self._lock:
            held = [h for h in (self._current, self._previous) if h is not None]
        if not held:
            raise FleetKeyUnavailableError("this replica does not hold the fleet key")
        for generation in held:
            session = generation.sessions.get(envelope.suite)
            if session is not None and session.descriptor_hash == envelope.descriptor_hash:
                opened = session.open_request(envelope)
                freshness.check_fresh(opened.request_id, opened.timestamp)
                freshness.claim(opened.request_id, opened.timestamp)
                if opened.conversation is None:
                    return AttestedTurn(opened)
                return AttestedTurn(
                    opened, generation.conversations[envelope.suite].key_for(opened.conversation)
                )
        raise UnknownDescriptorError(
            "the request was sealed to a fleet key generation this enclave does not hold (retired, or not"
            " yet installed)"
        )
