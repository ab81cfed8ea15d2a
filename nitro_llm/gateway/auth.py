"""Who may use the gateway: bearer API tokens, one per client, each with its own limits.

The gateway cannot read what it relays, but it can still be made to work for anyone who reaches it:
every accepted request costs the enclave a KMS call, a generation slot and CPU. Tokens decide who
gets that work. The tokens file holds only SHA-256 digests of the tokens (they are 256-bit random
strings, so a fast hash is enough and a stolen file grants nothing), plus each client's limits.
Tokens never appear in logs, errors or reprs; a client is named in logs by its configured name.

File format (JSON, unknown fields refused)::

    {"format": "nitro-llm-api-tokens/1",
     "clients": {"clinic-a": {"token_sha256": "<64 hex>", "rate_per_second": 2.0, "burst": 10,
                              "max_concurrent": 4}}}
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitro_llm.errors import ConfigError
from nitro_llm.gateway.clock import Clock, system_clock
from nitro_llm.gateway.errors import GatewayError

FORMAT = "nitro-llm-api-tokens/1"
TOKEN_PREFIX = "nlt_"  # noqa: S105 (a prefix, so leaked tokens are recognisable in scans)
_CLIENT_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_LIMIT_FIELDS = frozenset({"rate_per_second", "burst", "max_concurrent"})
_CLIENT_FIELDS = frozenset({"token_sha256"}) | _LIMIT_FIELDS
MAX_TOKEN_CHARS = 256
RELOAD_CHECK_SECONDS = 2.0


class Unauthorized(GatewayError, code="unauthorized", status_code=401):
    """send 'Authorization: Bearer <API token>' with a token the gateway's operator issued"""


@dataclass(frozen=True)
class ClientLimits:
    """Per-client admission limits; ``None`` means unlimited (only sensible on a private gateway)."""

    rate_per_second: float | None = None
    burst: int | None = None
    max_concurrent: int | None = None

    def __post_init__(self) -> None:
        if self.rate_per_second is not None and not self.rate_per_second > 0:
            raise ValueError("rate_per_second must be positive")
        if self.burst is not None and self.burst < 1:
            raise ValueError("burst must be at least 1")
        if self.max_concurrent is not None and self.max_concurrent < 1:
            raise ValueError("max_concurrent must be at least 1")

    def merged_over(self, defaults: ClientLimits) -> ClientLimits:
        """This client's own values, the gateway-wide defaults where it has none."""
        return ClientLimits(
            self.rate_per_second if self.rate_per_second is not None else defaults.rate_per_second,
            self.burst if self.burst is not None else defaults.burst,
            self.max_concurrent if self.max_concurrent is not None else defaults.max_concurrent,
        )


@dataclass(frozen=True)
class Client:
    name: str
    limits: ClientLimits = field(default_factory=ClientLimits)


ANONYMOUS = "anonymous"
"""The one client every request is when no tokens file is configured."""


def token_digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_token() -> str:
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def bearer_token(authorization: str | None) -> str | None:
    """The token of an ``Authorization: Bearer ...`` header, or None if there is none usable."""
    if not authorization:
        return None
    scheme, _, value = authorization.strip().partition(" ")
    value = value.strip()
    if scheme.lower() != "bearer" or not value or len(value) > MAX_TOKEN_CHARS or " " in value:
        return None
    return value


def _limits(raw: Mapping[str, Any], where: str) -> ClientLimits:
    rate, burst, conc = raw.get("rate_per_second"), raw.get("burst"), raw.get("max_concurrent")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float)):
        raise ConfigError(f"{where}: rate_per_second must be a number")
    for name, value in (("burst", burst), ("max_concurrent", conc)):
        if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
            raise ConfigError(f"{where}: {name} must be an integer")
    try:
        return ClientLimits(float(rate) if rate is not None else None, burst, conc)
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from None


def parse_tokens(data: Any) -> dict[str, Client]:
    """token digest -> client. Strict, so a typo cannot silently drop a limit."""
    hint = "see 'nitro-llm gateway-token --help' for the file format"
    if not isinstance(data, Mapping) or set(data) != {"format", "clients"} or data["format"] != FORMAT:
        raise ConfigError(f'the tokens file must be {{"format": "{FORMAT}", "clients": {{...}}}}', hint=hint)
    clients = data["clients"]
    if not isinstance(clients, Mapping):
        raise ConfigError("the tokens file's 'clients' must be a map of name -> entry", hint=hint)
    out: dict[str, Client] = {}
    for name, entry in clients.items():
        if not isinstance(name, str) or not _CLIENT_NAME.fullmatch(name):
            raise ConfigError("client names are 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)", hint=hint)
        if not isinstance(entry, Mapping) or not set(entry) <= _CLIENT_FIELDS or "token_sha256" not in entry:
            raise ConfigError(
                f"client {name!r} needs token_sha256 and may have only {', '.join(sorted(_LIMIT_FIELDS))}",
                hint=hint,
            )
        digest = entry["token_sha256"]
        if not isinstance(digest, str) or not _HEX64.fullmatch(digest):
            raise ConfigError(f"client {name!r}: token_sha256 must be 64 lowercase hex characters", hint=hint)
        if digest in out:
            raise ConfigError(f"clients {out[digest].name!r} and {name!r} share a token", hint=hint)
        out[digest] = Client(name, _limits(entry, f"client {name!r}"))
    return out


class TokenRegistry:
    """Authenticates bearer tokens against a tokens file, re-read when the file changes, so an
    operator can revoke or add a client without restarting the gateway (and so dropping streams)."""

    def __init__(
        self, path: Path, *, defaults: ClientLimits | None = None, clock: Clock = system_clock
    ) -> None:
        self.path = path
        self.defaults = defaults or ClientLimits()
        self._clock = clock
        self._lock = threading.Lock()
        self._stamp: tuple[int, int, int] | None = None
        self._checked = -float("inf")  # the first request checks the file
        self._clients: dict[str, Client] = {}
        self._load()

    def _load(self) -> None:
        try:
            stat = self.path.stat()
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(
                f"cannot read the API tokens file {self.path} ({type(exc).__name__})",
                hint="create it with 'nitro-llm gateway-token FILE NAME'",
            ) from None
        clients = parse_tokens(data)
        self._clients = {
            digest: Client(c.name, c.limits.merged_over(self.defaults)) for digest, c in clients.items()
        }
        self._stamp = _stamp(stat)

    def _maybe_reload(self) -> None:
        now = self._clock()
        if now - self._checked < RELOAD_CHECK_SECONDS:
            return
        self._checked = now
        try:
            stat = self.path.stat()
        except OSError:
            return  # keep serving with what we have; the next check tries again
        if _stamp(stat) != self._stamp:
            try:
                self._load()
            except ConfigError:
                pass  # a half-written or broken file must not lock every client out

    @property
    def clients(self) -> list[Client]:
        with self._lock:
            return list(self._clients.values())

    def authenticate(self, authorization: str | None) -> Client:
        token = bearer_token(authorization)
        if token is None:
            raise Unauthorized("this gateway needs an API token")
        digest = token_digest(token)
        with self._lock:
            self._maybe_reload()
            # A dict lookup keyed by the digest: timing can reveal at most something about the
            # digest of a guess, which says nothing about any valid token.
            client = self._clients.get(digest)
        if client is None:
            raise Unauthorized("the API token is not valid for this gateway")
        return client


def _stamp(stat: os.stat_result) -> tuple[int, int, int]:
    # The inode too: add_client renames a new file into place, so a rewrite within the file
    # system's timestamp granularity, of the same size, is still seen.
    return (stat.st_ino, stat.st_mtime_ns, stat.st_size)


def add_client(path: Path, name: str, limits: ClientLimits | None = None) -> str:
    """Add (or replace) a client in a tokens file and return its new token, shown only once.

    Written to a temporary file beside it and renamed, so a reader never sees half a file. The new
    file keeps the old one's owner, group and mode: the gateway reads it as its own user, and an
    operator issuing a token with sudo must not leave a root-only file the gateway cannot read. A
    new file is 0600, owned by whoever runs this.
    """
    data: dict[str, Any] = {"format": FORMAT, "clients": {}}
    previous: os.stat_result | None = None
    if path.exists():
        try:
            previous = path.stat()
            data = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"cannot read {path} ({type(exc).__name__})") from None
        parse_tokens(data)
    if not _CLIENT_NAME.fullmatch(name):
        raise ConfigError("client names are 1-64 of A-Z a-z 0-9 . _ - (starting alphanumeric)")
    token = new_token()
    entry: dict[str, Any] = {"token_sha256": token_digest(token)}
    for key in sorted(_LIMIT_FIELDS):
        value = getattr(limits, key) if limits else None
        if value is not None:
            entry[key] = value
    data["clients"][name] = entry
    parse_tokens(data)
    _write_like(path, json.dumps(data, indent=2), previous)
    return token


def _write_like(path: Path, text: str, previous: os.stat_result | None) -> None:
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as exc:
        raise ConfigError(
            f"cannot write beside {path} ({exc.strerror})",
            hint=f"run as the user that owns {path.parent} (deploy/README.md: sudo -u nitro-llm ...)",
        ) from None
    try:
        with os.fdopen(fd, "w") as out:
            out.write(text)
            if previous is not None:
                if (previous.st_uid, previous.st_gid) != (os.getuid(), os.getgid()):
                    os.fchown(out.fileno(), previous.st_uid, previous.st_gid)
                os.fchmod(out.fileno(), previous.st_mode & 0o777)
            out.flush()
            os.fsync(out.fileno())
        tmp.replace(path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ConfigError(
            f"cannot replace {path} ({exc.strerror})",
            hint=f"run as {path}'s owner or as root",
        ) from None
