"""The parent instance's role credentials, from the EC2 instance metadata service (IMDSv2 only).

The enclave has no network, so the gateway fetches the instance role's credentials and hands them
over vsock. The HTTP side is botocore's own metadata fetcher (``InstanceMetadataFetcher``: endpoint
checks, session, IMDSv2 paths and headers), with three things it does not do by itself:

- Never IMDSv1: IMDSv1 is the request shape that SSRF bugs can replay, so a server that refuses the
  token PUT is an error, never a reason to fall back (botocore's ``ec2_metadata_v1_disabled`` too).
- Never a proxy: botocore takes HTTP(S)_PROXY/NO_PROXY from the environment when the fetcher is
  built (its ``env=`` argument only decides AWS_EC2_METADATA_DISABLED) and a proxy would see the
  credentials, so its HTTP session is replaced by one with no proxies.
- Typed errors and one session token reused until shortly before its TTL ends: botocore folds every
  failure into "no credentials" and asks for a token per call.

Errors never carry the credentials or the token. This leans on members botocore marks private
(``_session``, ``_get_request``, ``_construct_url``, ``_TOKEN_PATH``, ``_TOKEN_TTL``: the ones its own
fetchers are built on); tests/gateway/test_imds.py fails if one of them changes meaning, the proxy
test first.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from botocore.awsrequest import AWSRequest, AWSResponse
from botocore.exceptions import BotoCoreError, InvalidIMDSEndpointError
from botocore.httpsession import URLLib3Session
from botocore.utils import InstanceMetadataFetcher

from nitro_llm.gateway.credential_timing import REFRESH_MARGIN
from nitro_llm.gateway.credentials import RoleCredentials
from nitro_llm.gateway.errors import GatewayError

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "http://169.254.169.254"
TOKEN_TTL_SECONDS = 21600  # the longest IMDS grants: fewer token round-trips
TOKEN_RENEW_BEFORE = timedelta(seconds=60)

_CREDENTIALS_PATH = "latest/meta-data/iam/security-credentials/"
_TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"


class ImdsError(GatewayError, code="imds_error"):
    """run the gateway on the EC2 parent instance, or use --credentials-file in local mode"""


class ImdsUnreachable(ImdsError, code="imds_unreachable", retryable=True):
    """the instance metadata service did not answer: run on an EC2 instance with metadata enabled
    (HttpEndpoint=enabled); from a container, raise HttpPutResponseHopLimit to 2"""


class ImdsV1Only(ImdsError, code="imds_v1_only"):
    """this metadata server does not issue IMDSv2 session tokens; nitro-llm never falls back to IMDSv1: use a
    real EC2 metadata service, or set the instance's HttpTokens to required"""


class ImdsForbidden(ImdsError, code="imds_forbidden"):
    """the metadata service refused the request: check that instance metadata is enabled and that no proxy
    sits in between (IMDS refuses requests carrying X-Forwarded-For)"""


class ImdsNoRole(ImdsError, code="imds_no_role"):
    """attach an instance profile with the enclave role to this instance (IamInstanceProfile)"""


class ImdsBadResponse(ImdsError, code="imds_bad_response", retryable=True):
    """retry; if it persists, check that the base URL points at the EC2 metadata service"""


class ImdsNotFound(ImdsBadResponse, code="imds_not_found", retryable=False):
    pass


@dataclass
class _Token:
    value: str
    expires_at: datetime


def _utcnow() -> datetime:
    return datetime.now(UTC)


def parse_expiration(text: str) -> datetime:
    """IMDS writes ``2024-05-01T12:00:00Z``; a naive time would make refresh decisions wrong, so
    anything without a zone is refused."""
    when = datetime.fromisoformat(text)
    if when.tzinfo is None:
        raise ValueError("expiration has no time zone")
    return when.astimezone(UTC)


class _Fetcher(InstanceMetadataFetcher):
    """botocore's metadata fetcher: one attempt per call, IMDSv1 refused by botocore itself, and no
    proxy (it reads HTTP(S)_PROXY/NO_PROXY when built, so its session is replaced by one without)."""

    def __init__(self, base_url: str, timeout: float, token_ttl_seconds: int) -> None:
        # env={}: IMDS was asked for explicitly (--imds); AWS_EC2_METADATA_DISABLED is for SDK chains.
        super().__init__(
            timeout=timeout,
            num_attempts=1,
            base_url=base_url,
            env={},
            config={"ec2_metadata_v1_disabled": True},
        )
        self._TOKEN_TTL = str(token_ttl_seconds)
        self._session = URLLib3Session(timeout=timeout, proxies={})

    def put_token(self) -> AWSResponse:
        """botocore's IMDSv2 token request, answered whatever the status (botocore's own folds 403,
        404, 405 and timeouts into "no token"); raises BotoCoreError if nobody answers."""
        headers = {_TTL_HEADER: self._TOKEN_TTL}
        request = AWSRequest(method="PUT", url=self._construct_url(self._TOKEN_PATH), headers=headers)
        return self._session.send(request.prepare())

    def get(self, path: str, token: str) -> AWSResponse | None:
        """One GET with the token, whatever its status; None if the server did not answer."""
        try:
            return self._get_request(path, retry_func=lambda _response: False, token=token)
        except self._RETRIES_EXCEEDED_ERROR_CLS:
            return None

    def close(self) -> None:
        self._session.close()


class ImdsClient:
    """Speaks IMDSv2 to one metadata server; the base URL is configurable so that tests (and
    IPv6-only instances, ``http://[fd00:ec2::254]``) can point it elsewhere."""

    def __init__(
        self,
        base_url: str = DEFAULT_BASE_URL,
        *,
        timeout: float = 2.0,
        token_ttl_seconds: int = TOKEN_TTL_SECONDS,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._ttl = token_ttl_seconds
        self._now = now
        self._token: _Token | None = None
        self._lock = threading.Lock()
        try:
            self._fetcher = _Fetcher(self.base_url, timeout, token_ttl_seconds)
        except InvalidIMDSEndpointError:
            raise ImdsError(f"{self.base_url!r} is not a metadata service URL") from None

    def close(self) -> None:
        self._fetcher.close()

    def __enter__(self) -> ImdsClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _unreachable(self, reason: str = "") -> ImdsUnreachable:
        return ImdsUnreachable(f"cannot reach the metadata service at {self.base_url}{reason}")

    def _fetch_token(self) -> _Token:
        try:
            resp = self._fetcher.put_token()
        except BotoCoreError as exc:
            raise self._unreachable(f" ({type(exc).__name__})") from None
        if resp.status_code in (404, 405, 501):
            raise ImdsV1Only(
                f"the metadata service at {self.base_url} refused the IMDSv2 token request "
                f"(HTTP {resp.status_code})"
            )
        if resp.status_code == 403:
            raise ImdsForbidden(
                f"the metadata service at {self.base_url} refused to issue a token (HTTP 403)"
            )
        value = str(resp.text).strip()
        if resp.status_code != 200 or not value:
            raise ImdsBadResponse(f"unexpected answer to the IMDSv2 token request (HTTP {resp.status_code})")
        ttl = self._ttl
        granted = resp.headers.get(_TTL_HEADER)
        if granted and granted.isdigit():
            ttl = min(ttl, int(granted))
        return _Token(value, self._now() + timedelta(seconds=ttl))

    def _current_token(self) -> str:
        with self._lock:
            if self._token is None or self._now() >= self._token.expires_at - TOKEN_RENEW_BEFORE:
                self._token = self._fetch_token()
            return self._token.value

    def get(self, path: str) -> str:
        """GET a metadata path with a session token; a token the server no longer accepts (401,
        e.g. after the instance was stopped and started) is replaced once, then the error stands."""
        path = path.lstrip("/")
        for attempt in range(2):
            resp = self._fetcher.get(path, self._current_token())
            if resp is None:
                raise self._unreachable()
            if resp.status_code == 401 and attempt == 0:
                with self._lock:
                    self._token = None
                continue
            if resp.status_code == 404:
                raise ImdsNotFound(f"the metadata path /{path} does not exist (HTTP 404)")
            if resp.status_code == 403:
                raise ImdsForbidden(f"the metadata service refused /{path} (HTTP 403)")
            if resp.status_code != 200:
                raise ImdsBadResponse(f"unexpected answer for /{path} (HTTP {resp.status_code})")
            return str(resp.text)
        raise ImdsBadResponse(
            f"the metadata service kept rejecting fresh session tokens for /{path} (HTTP 401)"
        )

    def instance_id(self) -> str:
        return self.get("latest/meta-data/instance-id").strip()

    def region(self) -> str:
        return self.get("latest/meta-data/placement/region").strip()

    def role_name(self) -> str:
        try:
            text = self.get(_CREDENTIALS_PATH)
        except ImdsNotFound as exc:
            raise ImdsNoRole("this instance has no IAM role attached") from exc
        names = [line.strip() for line in text.splitlines() if line.strip()]
        if not names:
            raise ImdsNoRole("this instance has no IAM role attached")
        return names[0]

    def role_credentials(self, role: str | None = None) -> tuple[RoleCredentials, datetime]:
        """The role's current credentials and when they expire (as IMDS says: botocore's own
        fetcher would push a near expiry later, and the enclave would then hold expired keys)."""
        role = role or self.role_name()
        text = self.get(_CREDENTIALS_PATH + role)
        try:
            data = json.loads(text)
            if data.get("Code", "Success") != "Success":
                raise ImdsBadResponse(
                    f"the metadata service reports the role's credentials as {str(data.get('Code'))[:40]!r}",
                    hint="check the instance profile's role and its trust policy (ec2.amazonaws.com)",
                )
            expires = parse_expiration(data["Expiration"])
            creds = RoleCredentials(
                access_key_id=data["AccessKeyId"],
                secret_access_key=data["SecretAccessKey"],
                session_token=data["Token"],
                expiration=expires.strftime("%Y-%m-%dT%H:%M:%SZ"),
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            # The body holds secrets: name only the kind of defect, never the content.
            raise ImdsBadResponse(
                f"malformed credentials document for the role ({type(exc).__name__})"
            ) from None
        return creds, expires


class ImdsCredentialsSource:
    """The gateway's ``CredentialsSource`` on EC2: cached role credentials, refreshed from IMDS once
    they are within ``refresh_margin`` of expiry (nitro_llm/gateway/credential_timing.py: the push
    period puts several fetches inside that margin). If IMDS is briefly unavailable while the cached
    credentials are still valid, those are served rather than starving the enclave."""

    def __init__(
        self,
        client: ImdsClient | None = None,
        *,
        role: str | None = None,
        refresh_margin: timedelta = REFRESH_MARGIN,
        now: Callable[[], datetime] = _utcnow,
    ) -> None:
        self.client = client or ImdsClient(now=now)
        self.role = role
        self.refresh_margin = refresh_margin
        self._now = now
        self._cached: tuple[RoleCredentials, datetime] | None = None
        self._lock = threading.Lock()

    def refresh(self) -> RoleCredentials:
        """Fetch from IMDS now, whatever the cache says: KMS refused the cached credentials as expired
        (the gateway's clock or IMDS's expiration was wrong, or the session was revoked). Errors are
        raised, not covered by the cache: the cached credentials are the ones that failed."""
        with self._lock:
            fresh = self.client.role_credentials(self.role)
            self._cached = fresh
            log.info("role credentials fetched from IMDS on demand (expire %s)", fresh[0].expiration)
            return fresh[0]

    def needs_refresh(self) -> bool:
        return self._cached is None or self._now() >= self._cached[1] - self.refresh_margin

    def get(self) -> RoleCredentials:
        with self._lock:
            if not self.needs_refresh():
                assert self._cached is not None
                return self._cached[0]
            try:
                fresh = self.client.role_credentials(self.role)
            except ImdsError as exc:
                if self._cached is not None and self._now() < self._cached[1]:
                    log.warning("IMDS refresh failed (%s); serving cached credentials until expiry", exc.code)
                    return self._cached[0]
                raise
            self._cached = fresh
            log.info("role credentials refreshed from IMDS (expire %s)", fresh[0].expiration)
            return fresh[0]
