"""Trust roots: the pinned AWS Nitro root, and explicitly chosen others.

The root inside a document is attacker-controlled, so the verifier never takes it from there: it
compares it with a root the caller pinned. The AWS root ships as package data and is checked against
its SHA-256 on load, so a tampered installation fails loudly instead of trusting a substituted CA.
Any other root (the local dev CA) is accepted only when passed explicitly, and doing so is logged as
unsafe once per root per process, so it cannot slip into production unnoticed.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
from importlib import resources
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from nitro_llm.attestation.errors import TrustRootError

log = logging.getLogger(__name__)

#: SHA-256 of the DER of AWS_NitroEnclaves_Root-G1 (CN=aws.nitro-enclaves, valid 2019-10-28 to 2049-10-28).
#: AWS publishes the hash of the zip file it ships the PEM in; this is the certificate's own hash.
AWS_NITRO_ROOT_G1_SHA256 = "641a0321a3e244efe456463195d606317ed7cdcc3c1756e09893f3c68f79bb5b"

_ROOT_RESOURCE = "aws-nitro-root-g1.pem"
_warned: set[str] = set()
_warned_lock = threading.Lock()


def fingerprint(cert: x509.Certificate) -> str:
    """SHA-256 of the certificate's DER, hex: the identity roots are pinned by."""
    return hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()


@functools.lru_cache(maxsize=1)
def aws_nitro_root() -> x509.Certificate:
    """The AWS Nitro Enclaves root G1, loaded from package data and checked against its pinned hash."""
    try:
        pem = resources.files("nitro_llm.attestation").joinpath("roots", _ROOT_RESOURCE).read_bytes()
        cert = x509.load_pem_x509_certificate(pem)
    except (OSError, ValueError) as exc:
        raise TrustRootError(f"the packaged AWS Nitro root cannot be read ({type(exc).__name__})") from None
    if fingerprint(cert) != AWS_NITRO_ROOT_G1_SHA256:
        raise TrustRootError(
            "the packaged AWS Nitro root does not match its pinned SHA-256",
            hint="the installation was modified: reinstall nitro-llm before trusting any attestation",
        )
    return cert


def is_aws_root(cert: x509.Certificate) -> bool:
    return fingerprint(cert) == AWS_NITRO_ROOT_G1_SHA256


def load_root_pem(path: str | Path) -> x509.Certificate:
    """Load one CA certificate from a PEM file chosen by the operator (e.g. the dev CA's root)."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise TrustRootError(f"cannot read root certificate file {path} ({exc.strerror})") from None
    try:
        certs = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise TrustRootError(f"{path} does not hold a PEM certificate") from None
    if len(certs) != 1:
        raise TrustRootError(f"{path} holds {len(certs)} certificates; pass exactly one root")
    return certs[0]


def resolve_roots(roots: list[x509.Certificate] | None) -> list[x509.Certificate]:
    """The roots a verification trusts: the AWS root unless the caller chose others explicitly."""
    if roots is None:
        return [aws_nitro_root()]
    if not roots:
        raise TrustRootError(
            "an empty list of trust roots would reject everything",
            hint="pass roots=None for the AWS Nitro root, or the dev root for local mode",
        )
    for root in roots:
        if not isinstance(root, x509.Certificate):
            raise TrustRootError("trust roots must be cryptography x509.Certificate objects")
        if not is_aws_root(root):
            warn_unsafe_root(root)
    return list(roots)


def warn_unsafe_root(root: x509.Certificate) -> None:
    """Log, once per root per process, that a non-AWS root is trusted (local mode only)."""
    fp = fingerprint(root)
    with _warned_lock:
        if fp in _warned:
            return
        _warned.add(fp)
    log.warning(
        "UNSAFE: trusting a non-AWS root (%s, sha256 %s): acceptable for local mode only",
        root.subject.rfc4514_string(),
        fp[:16],
    )
