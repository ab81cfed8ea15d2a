"""Client-side verification for the "attested" protocol: decide whether a key may receive a question.

Input: the attestation document and session descriptor the gateway relayed (both untrusted), the
nonce this client just chose, and the user's :class:`ClientPolicy`. Output: a
:class:`VerifiedEnclave` naming the HPKE key, model and PCRs, or a typed error. Nothing is sealed to
a key that did not come out of here, so a refused enclave never receives a byte of the question.

The document is checked by ``nitro_llm.attestation.verify_document`` (root, chain, signature, PCRs,
debug mode, nonce, age, user_data); the binding of the descriptor is then re-checked here on the
parsed document, and the descriptor's own promises (model, config, suite) against the policy. A
verified key is cached by descriptor hash until its leaf certificate expires; the enclave rotating
its key shows up as ``UnknownDescriptorError`` on the next request, and the caller forgets the entry.
"""

from __future__ import annotations

import datetime as dt
import hmac
import os
import threading
from dataclasses import dataclass, field
from typing import Any

from nitro_llm.attestation import verify_document
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.errors import NitroLLMError
from nitro_llm.protocol.attested import SessionDescriptor, descriptor_hash

NONCE_SIZE = 32
MIN_NONCE_SIZE = 16


# The enclave's document verified, but what it announces is not what the policy accepts.
class AttestedVerificationError(NitroLLMError, code="attested_verification_failed"):
    """do not send questions to this enclave; check the policy file against the deployment"""


class DescriptorBindingError(AttestedVerificationError, code="attested_descriptor_unbound"):
    """the descriptor is not the one the enclave attested: the relay altered it; do not use it"""


class ModelMismatchError(AttestedVerificationError, code="attested_model_mismatch"):
    """the enclave runs another model than the policy names; update the policy or the deployment"""


class ConfigMismatchError(AttestedVerificationError, code="attested_config_mismatch"):
    """the enclave runs another configuration than the policy names"""


class SuiteNotAcceptedError(AttestedVerificationError, code="attested_suite_refused"):
    """ask the gateway for a suite the policy lists in accepted_suites"""


def new_nonce() -> bytes:
    """A fresh challenge for GET /v1/attestation: proves the document was made for this request."""
    return os.urandom(NONCE_SIZE)


@dataclass(frozen=True)
class VerifiedEnclave:
    """An enclave session this client verified: the only thing ``seal_request`` should be given."""

    descriptor: SessionDescriptor
    descriptor_hash: bytes
    pcrs: dict[int, bytes] = field(repr=False)
    module_id: str
    document_time: dt.datetime
    leaf_not_after: dt.datetime
    verified_at: dt.datetime
    unsafe: tuple[str, ...] = ()

    @property
    def hpke_public_key(self) -> bytes:
        return self.descriptor.hpke_public_key

    @property
    def suite(self) -> str:
        return self.descriptor.hpke_suite

    @property
    def model_digest(self) -> str:
        return self.descriptor.model_digest

    @property
    def config_digest(self) -> str:
        return self.descriptor.config_digest

    def valid_at(self, now: dt.datetime) -> bool:
        return now < self.leaf_not_after

    def describe(self) -> dict[str, Any]:
        """JSON-ready facts for a person (the proxy's verified panel, ``--verbose`` output)."""
        return {
            "protocol": "attested",
            "verified": True,
            "hpke_suite": self.suite,
            "descriptor_sha256": self.descriptor_hash.hex(),
            "model_digest": self.model_digest,
            "config_digest": self.config_digest,
            "pcrs": {str(i): v.hex() for i, v in sorted(self.pcrs.items()) if i in (0, 1, 2, 3, 4, 8)},
            "module_id": self.module_id,
            "document_time": self.document_time.isoformat(timespec="seconds"),
            "verified_at": self.verified_at.isoformat(timespec="seconds"),
            "valid_until": self.leaf_not_after.isoformat(timespec="seconds"),
            "unsafe": list(self.unsafe),
        }


def verify_attestation(
    document: bytes,
    descriptor: bytes,
    nonce: bytes,
    policy: ClientPolicy,
    *,
    at: dt.datetime | None = None,
) -> VerifiedEnclave:
    """Verify one (document, descriptor) pair fetched with ``nonce``; raise a typed error otherwise.

    ``at`` is the verification time (now by default): certificates must be valid then, and the
    document no older than the policy allows.
    """
    if not isinstance(nonce, bytes) or len(nonce) < MIN_NONCE_SIZE:
        raise AttestedVerificationError(
            f"the attestation nonce must be at least {MIN_NONCE_SIZE} random bytes",
            hint="use nitro_llm.client.attested_verify.new_nonce() for each attestation request",
        )
    if not isinstance(descriptor, bytes) or not isinstance(document, bytes):
        raise AttestedVerificationError("document and descriptor must be bytes")
    expected_user_data = descriptor_hash(descriptor)
    when = at or dt.datetime.now(dt.UTC)
    report = verify_document(
        document,
        roots=policy.roots(),
        at=when,
        policy=policy.verification_policy(nonce=nonce, user_data=expected_user_data),
    )
    doc = report.document
    assert doc is not None  # verify_document returns a report with a document, or raises
    # Belt and braces: the binding is the whole protocol's security, so it is checked here too.
    if doc.user_data is None or not hmac.compare_digest(doc.user_data, expected_user_data):
        raise DescriptorBindingError("the document's user_data is not the hash of the descriptor received")
    if doc.nonce is None or not hmac.compare_digest(doc.nonce, nonce):
        raise DescriptorBindingError("the document does not carry this request's nonce")
    parsed = SessionDescriptor.from_cbor(descriptor)
    if parsed.hpke_suite not in policy.accepted_suites:
        raise SuiteNotAcceptedError(
            f"the enclave offers {parsed.hpke_suite}, which the policy does not accept"
        )
    if policy.model_digest is not None and parsed.model_digest != policy.model_digest:
        raise ModelMismatchError("the enclave's model digest differs from the policy's model_digest")
    if policy.config_digest is not None and parsed.config_digest != policy.config_digest:
        raise ConfigMismatchError("the enclave's config digest differs from the policy's config_digest")
    return VerifiedEnclave(
        descriptor=parsed,
        descriptor_hash=expected_user_data,
        pcrs=dict(doc.pcrs),
        module_id=doc.module_id,
        document_time=doc.issued_at,
        leaf_not_after=doc.leaf.not_valid_after_utc,
        verified_at=when,
        unsafe=tuple(policy.unsafe_reasons()),
    )


class VerifiedEnclaveCache:
    """Verified sessions by descriptor hash, each until its leaf certificate expires.

    Saves one attestation round trip (and a chain verification) per question. Thread-safe: the proxy
    serves several requests at once.
    """

    def __init__(self, *, clock: Any = None) -> None:
        self._entries: dict[bytes, VerifiedEnclave] = {}
        self._latest: bytes | None = None
        self._lock = threading.Lock()
        self._clock = clock or (lambda: dt.datetime.now(dt.UTC))

    def put(self, enclave: VerifiedEnclave) -> None:
        with self._lock:
            self._entries[enclave.descriptor_hash] = enclave
            self._latest = enclave.descriptor_hash

    def get(self, digest: bytes) -> VerifiedEnclave | None:
        with self._lock:
            entry = self._entries.get(digest)
            if entry is not None and not entry.valid_at(self._clock()):
                del self._entries[digest]
                return None
            return entry

    def current(self, suite: str | None = None) -> VerifiedEnclave | None:
        """The most recently verified, still valid session (of ``suite``, if given)."""
        with self._lock:
            now = self._clock()
            for digest in [d for d, e in self._entries.items() if not e.valid_at(now)]:
                del self._entries[digest]
            latest = self._entries.get(self._latest) if self._latest is not None else None
            if latest is not None and (suite is None or latest.suite == suite):
                return latest
            matching = [e for e in self._entries.values() if suite is None or e.suite == suite]
            return max(matching, key=lambda e: e.verified_at, default=None)

    def forget(self, digest: bytes) -> None:
        """The enclave no longer holds this key (it said so): never seal to it again."""
        with self._lock:
            self._entries.pop(digest, None)
            if self._latest == digest:
                self._latest = None

    def clear(self) -> None:
        """Forget every session: the gateway went away, and whatever answers next (a restarted
        enclave, with new keys) must be verified anew before anything is sealed to it."""
        with self._lock:
            self._entries.clear()
            self._latest = None

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)
