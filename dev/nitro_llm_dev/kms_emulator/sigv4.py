"""AWS Signature Version 4 verification: who sent this request, and was it changed on the way?

The canonical request is rebuilt from what arrived (method, path, query, the headers the client
says it signed, the body's SHA-256), the signing key is derived from the principal's secret, and
the signature is recomputed and compared in constant time. On top of what SigV4 alone promises,
the emulator insists that ``host``, ``x-amz-date``, ``x-amz-target`` (which names the operation)
and, when present, ``x-amz-security-token`` are among the signed headers: an unsigned
``X-Amz-Target`` would let anyone on the path turn a signed DescribeKey into a Decrypt. Session
credentials past their expiration get ``ExpiredTokenException``, as from AWS.

Errors use AWS's exception names and, where they carry no secret, AWS's messages.
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qsl, quote, urlsplit

from nitro_llm.kms.errors import (
    ExpiredToken,
    IncompleteSignature,
    InvalidSignature,
    MissingAuthenticationToken,
    UnrecognizedClient,
)
from nitro_llm_dev.kms_emulator.principals import Principal, Principals

ALGORITHM = "AWS4-HMAC-SHA256"
SERVICE = "kms"
MAX_SKEW = timedelta(minutes=15)
REQUIRED_SIGNED = ("host", "x-amz-date", "x-amz-target")

_AMZ_DATE = "%Y%m%dT%H%M%SZ"
_BAD_TOKEN = "The security token included in the request is invalid."  # noqa: S105 - AWS's message
_MISMATCH = (
    "The request signature we calculated does not match the signature you provided. Check your AWS "
    "Secret Access Key and signing method. Consult the service documentation for details."
)
_SIGNATURE = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Authorization:
    access_key_id: str
    date: str
    region: str
    service: str
    terminator: str
    signed_headers: tuple[str, ...]
    signature: str


def verify_request(
    *,
    method: str,
    target: str,
    headers: Mapping[str, Sequence[str]],
    body: bytes,
    principals: Principals,
    now: datetime | None = None,
) -> Principal:
    """Return the principal that signed this request, or raise the AWS fault that explains why not.

    ``headers`` maps lower-cased header names to every value received for that name; ``target``
    is the request target (path and query) as it arrived.
    """
    raw_auth = _single(headers, "authorization")
    if raw_auth is None:
        raise MissingAuthenticationToken("Missing Authentication Token", hint="sign the request with SigV4")
    auth = parse_authorization(raw_auth)
    amz_date = _single(headers, "x-amz-date")
    if amz_date is None:
        raise IncompleteSignature("Authorization header requires existence of a 'X-Amz-Date' header.")
    try:
        signed_at = datetime.strptime(amz_date, _AMZ_DATE).replace(tzinfo=UTC)
    except ValueError:
        raise IncompleteSignature(
            "X-Amz-Date must be in the ISO-8601 basic format YYYYMMDD'T'HHMMSS'Z'."
        ) from None
    now = now or datetime.now(UTC)
    _check_freshness(signed_at, amz_date, now)
    _check_scope(auth, amz_date, principals.region)
    principal = principals.by_access_key(auth.access_key_id)
    if principal is None:
        raise UnrecognizedClient(_BAD_TOKEN, hint="use an access key from the emulator's credentials.json")
    _check_token(principal, headers, auth)
    for name in REQUIRED_SIGNED:
        if name not in auth.signed_headers:
            raise InvalidSignature(f"'{name}' must be a SignedHeader in the AWS Authorization.")
    expected = signature(
        secret_access_key=principal.secret_access_key,
        amz_date=amz_date,
        region=auth.region,
        service=auth.service,
        canonical=canonical_request(method, target, headers, auth.signed_headers, body),
    )
    if not hmac.compare_digest(expected, auth.signature):
        raise InvalidSignature(_MISMATCH)
    if principal.expired(now):  # only a correct signature learns that its token has expired
        raise ExpiredToken(
            "The security token included in the request is expired",
            hint="fetch the role's current credentials (IMDS, or credentials.json in local mode)",
        )
    return principal


def parse_authorization(value: str) -> Authorization:
    algorithm, _, rest = value.strip().partition(" ")
    if algorithm != ALGORITHM:
        raise IncompleteSignature(f"Unsupported AWS 'algorithm': only {ALGORITHM} is accepted.")
    fields: dict[str, str] = {}
    for part in rest.split(","):
        name, sep, val = part.strip().partition("=")
        if sep:
            fields[name] = val
    for required in ("Credential", "SignedHeaders", "Signature"):
        if not fields.get(required):
            raise IncompleteSignature(f"Authorization header requires '{required}' parameter.")
    scope = fields["Credential"].split("/")
    if len(scope) != 5 or not all(scope):
        raise IncompleteSignature(
            "Credential must have the form <access key>/<date>/<region>/<service>/aws4_request."
        )
    signed = tuple(fields["SignedHeaders"].split(";"))
    if any(not h or h != h.lower() for h in signed):
        raise IncompleteSignature("SignedHeaders must be lower-case header names separated by ';'.")
    if not _SIGNATURE.match(fields["Signature"]):
        raise IncompleteSignature("Signature must be 64 lower-case hex digits.")
    return Authorization(
        access_key_id=scope[0],
        date=scope[1],
        region=scope[2],
        service=scope[3],
        terminator=scope[4],
        signed_headers=signed,
        signature=fields["Signature"],
    )


def _check_freshness(signed_at: datetime, amz_date: str, now: datetime) -> None:
    if signed_at < now - MAX_SKEW:
        raise InvalidSignature(
            f"Signature expired: {amz_date} is now earlier than {(now - MAX_SKEW).strftime(_AMZ_DATE)} "
            f"({now.strftime(_AMZ_DATE)} - 15 min.)",
            hint="the signing clock is off or the request was replayed; sync the clock and retry",
        )
    if signed_at > now + MAX_SKEW:
        raise InvalidSignature(
            f"Signature not yet current: {amz_date} is still later than "
            f"{(now + MAX_SKEW).strftime(_AMZ_DATE)} "
            f"({now.strftime(_AMZ_DATE)} + 15 min.)",
            hint="the signing clock is ahead; sync the clock and retry",
        )


def _check_scope(auth: Authorization, amz_date: str, region: str) -> None:
    if auth.date != amz_date[:8]:
        raise InvalidSignature(
            f"Date in Credential scope does not match YYYYMMDD from ISO-8601 version of date from HTTP: "
            f"'{auth.date}' != '{amz_date[:8]}', from '{amz_date}'."
        )
    if auth.region != region:
        raise InvalidSignature(
            f"Credential should be scoped to a valid region, not '{auth.region}'.",
            hint=f"this KMS serves region {region}",
        )
    if auth.service != SERVICE:
        raise InvalidSignature(f"Credential should be scoped to correct service: '{SERVICE}'.")
    if auth.terminator != "aws4_request":
        raise InvalidSignature("Credential should be scoped with a valid terminator: 'aws4_request'.")


def _check_token(principal: Principal, headers: Mapping[str, Sequence[str]], auth: Authorization) -> None:
    """Session credentials need their token; long-term credentials must not carry one."""
    token = _single(headers, "x-amz-security-token")
    if principal.session_token is None:
        if token is not None:
            raise UnrecognizedClient(_BAD_TOKEN)
        return
    if token is None or not hmac.compare_digest(token.encode(), principal.session_token.encode()):
        raise UnrecognizedClient(_BAD_TOKEN, hint="send the session token issued with these role credentials")
    if "x-amz-security-token" not in auth.signed_headers:
        raise InvalidSignature("'x-amz-security-token' must be a SignedHeader in the AWS Authorization.")


def canonical_request(
    method: str,
    target: str,
    headers: Mapping[str, Sequence[str]],
    signed_headers: Sequence[str],
    body: bytes,
) -> str:
    parts = urlsplit(target)
    lines = [
        method.upper(),
        _canonical_path(parts.path or "/"),
        _canonical_query(parts.query),
    ]
    for name in signed_headers:
        values = headers.get(name)
        if values is None:
            raise InvalidSignature(f"Signed header '{name}' is not in the request.")
        lines.append(f"{name}:{','.join(' '.join(v.split()) for v in values)}")
    lines.append("")  # the canonical headers block ends with a newline
    lines.append(";".join(signed_headers))
    lines.append(hashlib.sha256(body).hexdigest())
    return "\n".join(lines)


def _canonical_path(path: str) -> str:
    """Normalised, then URI-encoded once more (non-S3 services double-encode)."""
    segments: list[str] = []
    for segment in path.split("/"):
        if segment in ("", "."):
            continue
        if segment == "..":
            if segments:
                segments.pop()
            continue
        segments.append(segment)
    normalised = "/" + "/".join(segments)
    if path.endswith("/") and normalised != "/":
        normalised += "/"
    return quote(normalised, safe="/~")


def _canonical_query(query: str) -> str:
    pairs = parse_qsl(query, keep_blank_values=True)
    encoded = sorted((quote(k, safe="-_.~"), quote(v, safe="-_.~")) for k, v in pairs)
    return "&".join(f"{k}={v}" for k, v in encoded)


def signature(*, secret_access_key: str, amz_date: str, region: str, service: str, canonical: str) -> str:
    date = amz_date[:8]
    scope = f"{date}/{region}/{service}/aws4_request"
    string_to_sign = "\n".join(
        [ALGORITHM, amz_date, scope, hashlib.sha256(canonical.encode("utf-8")).hexdigest()]
    )
    key = ("AWS4" + secret_access_key).encode("utf-8")
    for part in (date, region, service, "aws4_request"):
        key = hmac.new(key, part.encode("utf-8"), hashlib.sha256).digest()
    return hmac.new(key, string_to_sign.encode("utf-8"), hashlib.sha256).hexdigest()


def _single(headers: Mapping[str, Sequence[str]], name: str) -> str | None:
    values = headers.get(name)
    if not values:
        return None
    if len(values) > 1:
        raise IncompleteSignature(f"The request has more than one '{name}' header.")
    return values[0]
