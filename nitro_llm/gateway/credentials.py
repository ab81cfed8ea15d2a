"""Where the gateway gets the instance role's credentials that it hands to the enclave.

On EC2 the parent holds the instance role (IMDSv2) and the enclave has no network to fetch it, so
the parent passes the credentials in. That is safe only because the key policy lets this role
decrypt *with an attestation document of the right PCRs*: the parent holding the same credentials
cannot decrypt. In local mode the KMS emulator issues the role's credentials into a JSON file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Protocol

from nitro_llm.gateway.errors import CredentialsFileError, CredentialsFileTooBroad
from nitro_llm.protocol.frame_kinds import Credentials

RoleCredentials = Credentials
"""The instance role's credentials, in the frame type the enclave reads (one definition for both ends)."""


class CredentialsSource(Protocol):
    def get(self) -> RoleCredentials: ...


_ROLE_FIELDS = frozenset({"access_key_id", "secret_access_key", "session_token", "expiration"})
_ROLE_METADATA = frozenset({"arn", "session_arn"})  # who the role is: names, not secrets


class FileCredentialsSource:
    """Reads one role's credentials from a JSON file (local mode: the ``enclave-role.json`` that the
    KMS emulator writes), read again on every hand-off so that rotated credentials are picked up.

    The file must hold that one role and nothing else. The emulator's ``credentials.json`` also holds
    the data owner's and the admin's secret keys, with which the gateway could decrypt a captured data
    key without any attestation: given that file, the gateway refuses to start, as it must be given
    no more than the enclave role's credentials, as on EC2.
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def get(self) -> RoleCredentials:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError) as exc:
            raise CredentialsFileError(
                f"cannot read role credentials from {self.path} ({type(exc).__name__})"
            ) from None
        if not isinstance(data, dict):
            raise CredentialsFileError(f"{self.path} is not a JSON object of role credentials")
        extra = sorted(set(data) - _ROLE_FIELDS - _ROLE_METADATA)
        if extra:
            others = ", ".join(name[:40] for name in extra[:5])
            raise CredentialsFileTooBroad(
                f"{self.path} holds more than one role's credentials (also: {others})"
            )
        try:
            return RoleCredentials(
                access_key_id=_text(data, "access_key_id"),
                secret_access_key=_text(data, "secret_access_key"),
                session_token=_optional_text(data, "session_token"),
                expiration=_optional_text(data, "expiration"),
            )
        except (KeyError, TypeError):
            raise CredentialsFileError(
                f"{self.path} lacks a text access_key_id and secret_access_key"
            ) from None


def _text(data: dict[str, object], name: str) -> str:
    value = data[name]
    if not isinstance(value, str) or not value:
        raise TypeError(name)
    return value


def _optional_text(data: dict[str, object], name: str) -> str | None:
    return _text(data, name) if data.get(name) is not None else None
