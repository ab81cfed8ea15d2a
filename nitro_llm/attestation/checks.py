"""The individual checks a document must pass, as small objects composed by ``AllOf``.

Each check has a name and one method, ``run(ctx) -> detail``: it returns a sentence saying what it
established, or raises the typed ``AttestationError`` for its failure. Keeping them separate makes
each rule readable on its own (a security review reads one concern at a time) and lets the report
list exactly which rules ran. The order matters only for which error a bad document gets first: the
chain is established before the key it certifies is used for the COSE signature.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import logging
import threading
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import SignatureAlgorithmOID
from cryptography.x509.verification import ExtensionPolicy, PolicyBuilder, Store, VerificationError

from nitro_llm.attestation.document import AttestationDocument
from nitro_llm.attestation.errors import (
    AttestationError,
    ChainError,
    DebugModeError,
    ExpiredError,
    NonceMismatchError,
    PcrMismatchError,
    PolicyError,
    PublicKeyMismatchError,
    SignatureError,
    StaleDocumentError,
    UntrustedRootError,
    UserDataMismatchError,
)
from nitro_llm.attestation.policy import VerificationPolicy
from nitro_llm.attestation.report import CheckResult

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Skip:
    """Returned instead of a detail when the policy gives a check nothing to do; says what was not checked."""

    reason: str


@dataclass(frozen=True)
class Context:
    document: AttestationDocument
    roots: list[x509.Certificate]
    at: dt.datetime  # timezone-aware UTC
    policy: VerificationPolicy


class Check(Protocol):
    name: str

    def run(self, ctx: Context) -> str | Skip: ...


class AllOf:
    """Run checks in order; stop at the first failure. An empty list is refused, never vacuously true."""

    def __init__(self, checks: Sequence[Check]) -> None:
        if not checks:
            raise PolicyError("refusing to verify with an empty list of checks")
        self.checks = list(checks)

    def run(self, ctx: Context, results: list[CheckResult]) -> None:
        """Append one result per check to ``results``; re-raise a failure after recording it."""
        for check in self.checks:
            try:
                detail = check.run(ctx)
            except AttestationError as exc:
                results.append(CheckResult(check.name, "fail", exc.message))
                raise
            if isinstance(detail, Skip):
                results.append(CheckResult(check.name, "skip", detail.reason))
            else:
                results.append(CheckResult(check.name, "pass", detail))


def _name(cert: x509.Certificate) -> str:
    return cert.subject.rfc4514_string()


def _utc(value: dt.datetime) -> str:
    return value.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class ChainOrder:
    """The cabundle is root first and each certificate issues the next, ending at the leaf's issuer.

    Path building would accept a shuffled bundle; requiring the NSM's order rejects documents that were
    edited after the fact and keeps "which certificate is the root" unambiguous for the next check.
    """

    name = "chain.order"

    def run(self, ctx: Context) -> str:
        chain, leaf = ctx.document.chain, ctx.document.leaf
        root = chain[0]
        if root.subject != root.issuer:
            raise ChainError(
                f"cabundle[0] is not a self-issued root ({_name(root)}): bundle truncated or reordered"
            )
        for i in range(1, len(chain)):
            if chain[i].issuer != chain[i - 1].subject:
                raise ChainError(
                    f"cabundle[{i}] is not issued by cabundle[{i - 1}]: bundle truncated or reordered"
                )
        if leaf.issuer != chain[-1].subject:
            raise ChainError(
                "the leaf certificate is not issued by the last cabundle entry: bundle truncated"
            )
        return f"root first, {len(chain)} certificates, each issuing the next, ending at the leaf's issuer"


class RootPinned:
    """The document's root is byte-identical to a root the caller pinned; its own root is never trusted."""

    name = "chain.root"

    def run(self, ctx: Context) -> str:
        doc_root = ctx.document.cabundle[0]
        for pinned in ctx.roots:
            if hmac.compare_digest(pinned.public_bytes(serialization.Encoding.DER), doc_root):
                return f"root is the pinned {_name(pinned)}"
        raise UntrustedRootError(f"the document's root ({_name(ctx.document.chain[0])}) is not a pinned root")


class Validity:
    """Every certificate is within its validity period at the verification time."""

    name = "chain.validity"

    def run(self, ctx: Context) -> str:
        for label, cert in [
            ("leaf", ctx.document.leaf),
            *((f"cabundle[{i}]", c) for i, c in enumerate(ctx.document.chain)),
        ]:
            before, after = cert.not_valid_before_utc, cert.not_valid_after_utc
            if ctx.at > after:
                raise ExpiredError(f"{label} ({_name(cert)}) expired at {_utc(after)}, before {_utc(ctx.at)}")
            if ctx.at < before:
                raise ExpiredError(
                    f"{label} ({_name(cert)}) is not valid before {_utc(before)}, after {_utc(ctx.at)}"
                )
        leaf = ctx.document.leaf
        return (
            f"all certificates valid at {_utc(ctx.at)} "
            f"(leaf {_utc(leaf.not_valid_before_utc)} to {_utc(leaf.not_valid_after_utc)})"
        )


class VerifiedBundles:
    """Remembers CA bundles (root .. instance CA) that already passed full path validation.

    Every document from one enclave carries the same four CA certificates and a fresh leaf, so after
    the first document only the leaf's signature by the instance CA is new work. What is cached is
    time-independent (signatures, CA profile, path lengths, pinned root), keyed by the exact DER of
    the bundle and the trusted roots; validity periods are still checked on every document by
    ``Validity``. Bounded and thread-safe: the KMS emulator verifies from several threads.
    """

    def __init__(self, size: int = 64) -> None:
        self._size = size
        self._entries: OrderedDict[tuple[bytes, ...], None] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(ctx: Context) -> tuple[bytes, ...]:
        roots = sorted(hashlib.sha256(r.public_bytes(serialization.Encoding.DER)).digest() for r in ctx.roots)
        bundle = [hashlib.sha256(der).digest() for der in ctx.document.cabundle]
        return (*roots, b"|", *bundle)

    def __contains__(self, key: tuple[bytes, ...]) -> bool:
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                return True
            return False

    def add(self, key: tuple[bytes, ...]) -> None:
        with self._lock:
            self._entries[key] = None
            self._entries.move_to_end(key)
            while len(self._entries) > self._size:
                self._entries.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()


#: Process-wide; ``verified_bundles.clear()`` forgets everything (benchmarks measure the cold path so).
verified_bundles = VerifiedBundles()


class ChainSignatures:
    """X.509 path validation from the leaf through the cabundle to the pinned root (RFC 5280 via pyca).

    CA certificates get the Web PKI CA profile (basic constraints, key usage, path length); the leaf gets
    ``permit_all`` because Nitro leaves carry no Authority Key Identifier. All signatures must be
    ECDSA with SHA-384, the only algorithm the Nitro PKI uses, and the leaf must not be a CA. A bundle
    that passed once is remembered (see ``VerifiedBundles``) and then only the leaf's signature by
    the instance CA is checked.
    """

    name = "chain.signatures"

    def __init__(self, cache: VerifiedBundles | None = None) -> None:
        self._cache = verified_bundles if cache is None else cache

    def run(self, ctx: Context) -> str:
        doc = ctx.document
        for cert in [doc.leaf, *doc.chain]:
            if cert.signature_algorithm_oid != SignatureAlgorithmOID.ECDSA_WITH_SHA384:
                raise ChainError(f"{_name(cert)} is not signed with ECDSA SHA-384")
        try:
            leaf_constraints = doc.leaf.extensions.get_extension_for_class(x509.BasicConstraints).value
        except x509.ExtensionNotFound:
            leaf_constraints = None
        if leaf_constraints is not None and leaf_constraints.ca:
            raise ChainError("the leaf certificate is a CA certificate; Nitro leaves are not")
        key = VerifiedBundles.key(ctx)
        if key in self._cache:
            try:
                doc.leaf.verify_directly_issued_by(doc.chain[-1])
            except (InvalidSignature, ValueError, TypeError):
                raise ChainError(
                    "certificate path validation failed: the leaf's signature is invalid"
                ) from None
            return "leaf signed by the instance CA of a bundle already verified to the pinned root"
        verifier = (
            PolicyBuilder()
            .store(Store(ctx.roots))
            .time(ctx.at.astimezone(dt.UTC).replace(tzinfo=None))
            .extension_policies(
                ca_policy=ExtensionPolicy.webpki_defaults_ca(), ee_policy=ExtensionPolicy.permit_all()
            )
            .build_client_verifier()
        )
        try:
            verified = verifier.verify(doc.leaf, doc.chain[1:])
        except VerificationError as exc:
            raise ChainError(f"certificate path validation failed: {str(exc)[:200]}") from None
        if verified.chain[1:] == list(reversed(doc.chain)):  # the path is exactly the bundle: remember it
            self._cache.add(key)
        return f"path of {len(verified.chain)} certificates verified to the pinned root"


class CoseSignature:
    name = "cose.signature"

    def run(self, ctx: Context) -> str:
        try:
            key = ctx.document.leaf.public_key()
        except (ValueError, TypeError):  # e.g. a point not on the curve, or an unsupported algorithm
            raise SignatureError("the leaf certificate's public key cannot be loaded") from None
        ctx.document.cose.verify(key)
        return "ES384 signature over the payload verifies with the leaf certificate's key"


class DebugMode:
    name = "debug_mode"

    def run(self, ctx: Context) -> str:
        if not ctx.document.is_debug:
            return "PCR0-2 are measurements (not a debug-mode enclave)"
        if not ctx.policy.allow_debug:
            raise DebugModeError("PCR0, PCR1 and PCR2 are all zero: the enclave runs in debug mode")
        log.warning("UNSAFE: accepting a debug-mode enclave document (module %s)", ctx.document.module_id)
        return "UNSAFE: debug-mode enclave accepted because the policy allows debug mode"


class ExpectedPcrs:
    name = "pcrs"

    def run(self, ctx: Context) -> str | Skip:
        expected = ctx.policy.expected_pcrs
        if not expected:
            return Skip("no expected PCRs given: the enclave's code and model were NOT checked")
        for index in sorted(expected):
            actual = ctx.document.pcrs.get(index)
            if actual is None:
                raise PcrMismatchError(f"PCR{index} is expected but absent from the document")
            if not hmac.compare_digest(actual, expected[index]):
                raise PcrMismatchError(
                    f"PCR{index} is {actual.hex()[:16]}..., expected {expected[index].hex()[:16]}..."
                )
        return "PCR" + ", PCR".join(str(i) for i in sorted(expected)) + " match"


class _ExpectedBytes:
    """Shared shape of the nonce / user_data / public_key checks: equal to the expected value or fail."""

    name = ""
    field = ""
    error: type[AttestationError] = AttestationError

    def run(self, ctx: Context) -> str | Skip:
        expected = getattr(ctx.policy, self.field)
        if expected is None:
            return Skip(f"no expected {self.field} given")
        actual = getattr(ctx.document, self.field)
        if actual is None:
            raise self.error(f"the document has no {self.field}, one was expected")
        if not hmac.compare_digest(actual, bytes(expected)):
            raise self.error(f"the document's {self.field} differs from the expected value")
        return f"{self.field} matches the expected {len(actual)} bytes"


class ExpectedNonce(_ExpectedBytes):
    name = field = "nonce"
    error = NonceMismatchError


class ExpectedUserData(_ExpectedBytes):
    name = field = "user_data"
    error = UserDataMismatchError


class ExpectedPublicKey(_ExpectedBytes):
    name = field = "public_key"
    error = PublicKeyMismatchError


class Freshness:
    name = "freshness"

    def run(self, ctx: Context) -> str | Skip:
        max_age = ctx.policy.max_age
        if max_age is None:
            return Skip("no maximum age given")
        age = ctx.at - ctx.document.issued_at
        seconds, limit = age.total_seconds(), max_age.total_seconds()
        if age < -ctx.policy.max_clock_skew:
            raise StaleDocumentError(f"the document is dated {-seconds:.0f} s in the future")
        if age > max_age:
            raise StaleDocumentError(f"the document is {seconds:.0f} s old, over the {limit:.0f} s allowed")
        return f"issued {max(seconds, 0):.1f} s before {_utc(ctx.at)} (max {limit:.0f} s)"


def standard_checks() -> list[Check]:
    """Authenticity first (chain, then signature), then the policy's expectations."""
    return [
        ChainOrder(),
        RootPinned(),
        Validity(),
        ChainSignatures(),
        CoseSignature(),
        DebugMode(),
        ExpectedPcrs(),
        ExpectedNonce(),
        ExpectedUserData(),
        ExpectedPublicKey(),
        Freshness(),
    ]
