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

from nitro_llm.errors import ConfigError
from nitro_llm.protocol.frame_kinds import Credentials

RoleCredentials = Credentials
"""The instance role's credentials, in the frame type the enclave reads (one definition for both ends)."""


class CredentialsSource(Protocol):
    def get(self) -> RoleCredentials: ...


class FileCredentialsSource:
    """Reads the enclave role's entry from the KMS emulator's credentials.json (local mode)."""

    def __init__(self, path: Path, entry: str = "enclave_role") -> None:
        self.path = path
        self.entry = entry

    def get(self) -> RoleCredentials:
        try:
            data = json.loads(self.path.read_text())[self.entry]
            return RoleCredentials(
                access_key_id=data["access_key_id"],
                secret_access_key=data["secret_access_key"],
                session_token=data.get("session_token"),
                expiration=data.get("expiration"),
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ConfigError(
                f"cannot read the {self.entry!r} credentials from {self.path} ({type(exc).__name__})",
                hint="start the KMS emulator first (it writes credentials.json) or pass --imds on EC2",
            ) from None
