"""The identities the emulator issues on first start, and how a request's access key maps to one.

Three principals, as in the deployment they stand for:

* ``admin``: an IAM user that creates and manages keys (the only one allowed CreateKey);
* ``client``: the data owner's IAM user;
* ``enclave_role``: the EC2 instance role, as assumed-role session credentials with a session
  token. On EC2 the parent instance and the enclave hold the *same* credentials, which is why the
  key policy, not the credentials, must tell them apart (by attestation).

They are written once to ``credentials.json`` (mode 0600) in the state directory, the file the
local stack reads; restarting the emulator keeps them. The enclave role's entry alone is also written
to ``enclave-role.json``: the one file the gateway is given, as on EC2 it holds the instance role and
nothing else (with the data owner's or the admin's keys it could decrypt without attestation).

Session credentials can expire, as the instance role's do on EC2: with a session lifetime the
``enclave_role`` entry carries an ``expiration`` (ISO 8601, UTC) and a request signed with it after
that time gets ``ExpiredTokenException``. ``rotate_session`` issues the next set the way IMDS does:
new keys and token written to ``credentials.json``, the previous set still valid until it expires.
"""

from __future__ import annotations

import secrets
import string
import threading
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from nitro_llm.kms.errors import EmulatorStateError
from nitro_llm.kms.policy_eval import Caller
from nitro_llm_dev.kms_emulator.storage import read_json, write_json_atomic

CREDENTIALS_FILE = "credentials.json"
ENCLAVE_ROLE_FILE = "enclave-role.json"
ADMIN_USER = "nitro-llm-admin"
CLIENT_USER = "nitro-llm-client"
ENCLAVE_ROLE = "nitro-llm-enclave"
ENCLAVE_SESSION = "i-0e1c1a7e5e551011a"  # an instance id, as EC2 names instance-role sessions

_KEY_ALPHABET = string.ascii_uppercase + string.digits
_SECRET_ALPHABET = string.ascii_letters + string.digits + "+/"


@dataclass(frozen=True)
class Principal:
    """One identity: what it signs with and who it is in policies."""

    name: str
    arn: str
    account: str
    access_key_id: str
    secret_access_key: str
    session_token: str | None = None
    role_arn: str | None = None
    expires_at: datetime | None = None
    """When session credentials stop working (None: never, like an IAM user's keys)."""

    def expired(self, now: datetime) -> bool:
        return self.expires_at is not None and now >= self.expires_at

    def caller(self) -> Caller:
        return Caller(arn=self.arn, account=self.account, role_arn=self.role_arn)

    def __repr__(self) -> str:  # never print the secret or the token
        return f"Principal(name={self.name!r}, arn={self.arn!r}, access_key_id={self.access_key_id!r})"


class Principals:
    """The emulator's account: lookup by access key id, and existence checks for key policies."""

    def __init__(self, account: str, region: str, principals: list[Principal]) -> None:
        self.account = account
        self.region = region
        self._lock = threading.Lock()
        self._by_key = {p.access_key_id: p for p in principals}
        self._by_name = {p.name: p for p in principals}

    def by_access_key(self, access_key_id: str) -> Principal | None:
        with self._lock:
            return self._by_key.get(access_key_id)

    def __getitem__(self, name: str) -> Principal:
        with self._lock:
            return self._by_name[name]

    def add_session(self, principal: Principal) -> None:
        """The newest credentials of ``principal.name``; earlier ones keep working until they expire."""
        with self._lock:
            self._by_key[principal.access_key_id] = principal
            self._by_name[principal.name] = principal

    def exists(self, principal_arn: str) -> bool:
        """Whether a key policy may name this principal (AWS refuses unknown IAM principals)."""
        if principal_arn == f"arn:aws:iam::{self.account}:root":
            return True
        if f"::{self.account}:" not in principal_arn:
            return True  # another account's principal: AWS cannot check it either, so it allows it
        return any(principal_arn in (p.arn, p.role_arn) for p in self._by_name.values())


def load_or_issue(
    state_dir: Path,
    region: str,
    *,
    session_lifetime: timedelta | None = None,
    now: datetime | None = None,
) -> Principals:
    """Read ``credentials.json``, or issue a fresh account and principals and write it.

    ``session_lifetime``: the role's session credentials expire that long after ``now`` (when they are
    issued); None issues them without an expiration."""
    path = state_dir / CREDENTIALS_FILE
    data = read_json(path)
    if data is None:
        data = _issue(region)
        if session_lifetime is not None:
            data["enclave_role"]["expiration"] = _iso((now or datetime.now(UTC)) + session_lifetime)
        write_json_atomic(path, data)
    try:
        principals = _from_json(data, region)
    except (KeyError, TypeError, ValueError):
        raise EmulatorStateError(
            f"{CREDENTIALS_FILE} in the state directory is not one this emulator wrote",
            hint="move the state directory away to issue new credentials",
        ) from None
    write_json_atomic(state_dir / ENCLAVE_ROLE_FILE, data["enclave_role"])
    return principals


def _from_json(data: dict[str, Any], region: str) -> Principals:
    account = str(data["account"])
    stored_region = str(data["region"])
    if stored_region != region:
        raise EmulatorStateError(
            f"this state directory belongs to region {stored_region}, not {region}",
            hint=f"pass --region {stored_region}, or use another --state-dir",
        )
    principals = []
    for name in ("admin", "client", "enclave_role"):
        entry = data[name]
        principals.append(
            Principal(
                name=name,
                arn=str(entry.get("session_arn") or entry["arn"]),
                account=account,
                access_key_id=str(entry["access_key_id"]),
                secret_access_key=str(entry["secret_access_key"]),
                session_token=entry.get("session_token"),
                role_arn=str(entry["arn"]) if entry.get("session_arn") else None,
                expires_at=_parse_iso(entry["expiration"]) if entry.get("expiration") else None,
            )
        )
    return Principals(account, region, principals)


def rotate_session(
    state_dir: Path, principals: Principals, *, now: datetime, lifetime: timedelta
) -> Principal:
    """Issue the enclave role's next session credentials, valid from ``now`` for ``lifetime``, and
    write them to ``credentials.json`` and ``enclave-role.json`` (as IMDS publishes the next set while
    the last still works)."""
    path = state_dir / CREDENTIALS_FILE
    data = read_json(path)
    if data is None:
        raise EmulatorStateError(f"{CREDENTIALS_FILE} is missing from the state directory")
    entry = {**data["enclave_role"], **_session_keys(), "expiration": _iso(now + lifetime)}
    data["enclave_role"] = entry
    write_json_atomic(path, data)
    write_json_atomic(state_dir / ENCLAVE_ROLE_FILE, entry)  # what the gateway reads
    current = principals["enclave_role"]
    fresh = replace(
        current,
        access_key_id=entry["access_key_id"],
        secret_access_key=entry["secret_access_key"],
        session_token=entry["session_token"],
        expires_at=now + lifetime,
    )
    principals.add_session(fresh)
    return fresh


def _iso(when: datetime) -> str:
    """IMDS's form: seconds, UTC, a trailing Z."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _parse_iso(text: str) -> datetime:
    when = datetime.fromisoformat(str(text))
    if when.tzinfo is None:
        raise ValueError("expiration has no time zone")
    return when.astimezone(UTC)


def _issue(region: str) -> dict[str, Any]:
    account = str(secrets.randbelow(9 * 10**11) + 10**11)
    return {
        "account": account,
        "region": region,
        "admin": _user(account, ADMIN_USER),
        "client": _user(account, CLIENT_USER),
        "enclave_role": {
            "arn": f"arn:aws:iam::{account}:role/{ENCLAVE_ROLE}",
            "session_arn": f"arn:aws:sts::{account}:assumed-role/{ENCLAVE_ROLE}/{ENCLAVE_SESSION}",
            **_session_keys(),
        },
    }


def _session_keys() -> dict[str, str]:
    return {
        "access_key_id": "ASIA" + _random(_KEY_ALPHABET, 16),
        "secret_access_key": _random(_SECRET_ALPHABET, 40),
        "session_token": secrets.token_urlsafe(96),
    }


def _user(account: str, name: str) -> dict[str, str]:
    return {
        "arn": f"arn:aws:iam::{account}:user/{name}",
        "access_key_id": "AKIA" + _random(_KEY_ALPHABET, 16),
        "secret_access_key": _random(_SECRET_ALPHABET, 40),
    }


def _random(alphabet: str, length: int) -> str:
    return "".join(secrets.choice(alphabet) for _ in range(length))
