"""``verify_document``: parse untrusted bytes, run every check, return a report or raise a typed error.

This is the one entry point the client, the KMS emulator and the tools share, so that "verified" means
the same thing everywhere: pinned root, ordered chain valid at the given time, ES384 signature, not
debug mode (unless allowed), and the caller's expectations.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from cryptography import x509

from nitro_llm.attestation.checks import AllOf, Check, Context, standard_checks
from nitro_llm.attestation.document import AttestationDocument, parse_document
from nitro_llm.attestation.errors import AttestationError
from nitro_llm.attestation.policy import VerificationPolicy
from nitro_llm.attestation.report import CheckResult, VerificationReport
from nitro_llm.attestation.trust import fingerprint, resolve_roots


def verify_document(
    data: bytes,
    *,
    roots: list[x509.Certificate] | None = None,
    at: dt.datetime | None = None,
    policy: VerificationPolicy,
    checks: Sequence[Check] | None = None,
) -> VerificationReport:
    """Verify a Nitro attestation document.

    ``roots=None`` trusts only the AWS Nitro root; any other root must be passed explicitly (and is
    logged as unsafe). ``at`` is the time certificates must be valid at: now by default, the
    document's own timestamp for stored documents (see ``document_time``); a naive datetime is read
    as UTC. ``checks`` replaces the standard check list (advanced use; an empty list is refused).
    On failure the raised ``AttestationError`` carries ``.report`` with every check that ran.
    """
    trusted = resolve_roots(roots)
    when = _as_utc(at) if at is not None else dt.datetime.now(dt.UTC)
    results: list[CheckResult] = []
    prints = [fingerprint(r) for r in trusted]
    document: AttestationDocument | None = None
    try:
        document = parse_document(data)
        results.append(CheckResult("schema", "pass", _schema_detail(document)))
        AllOf(standard_checks() if checks is None else checks).run(
            Context(document, trusted, when, policy), results
        )
    except AttestationError as exc:
        if document is None:
            results.append(CheckResult("schema", "fail", exc.message))
        exc.report = VerificationReport(document, results, when, prints)
        raise
    return VerificationReport(document, results, when, prints)


def document_time(data: bytes) -> dt.datetime:
    """The timestamp a document claims, for verifying stored documents "as of" their creation.

    Only meaningful together with the full verification: the timestamp is signed, but a document whose
    certificates have expired can only be checked at a time its signer chose.
    """
    return parse_document(data).issued_at


def _as_utc(value: dt.datetime) -> dt.datetime:
    return value.replace(tzinfo=dt.UTC) if value.tzinfo is None else value.astimezone(dt.UTC)


def _schema_detail(doc: AttestationDocument) -> str:
    tag = "tagged" if doc.cose.tagged else "untagged"
    return (
        f"{tag} COSE_Sign1 ES384; {len(doc.pcrs)} PCRs of 48 bytes; cabundle of {len(doc.cabundle)}; "
        f"module {doc.module_id}"
    )
