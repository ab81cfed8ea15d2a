"""The emulator's keys and aliases, kept in ``keys.json`` in the state directory.

Every change is written to disk before the operation answers, so a restart (or a crash right
after an answer) never loses a key whose id a caller already holds. Keys are resolved from any
of the forms KMS accepts: key id, key ARN, ``alias/name`` and alias ARN.
"""

from __future__ import annotations

import base64
import os
import re
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from nitro_llm.kms.errors import AlreadyExists, EmulatorStateError, NotFound, PolicyError
from nitro_llm.kms.policy_eval import KeyPolicy, parse_policy
from nitro_llm_dev.kms_emulator.storage import read_json, write_json_atomic

KEYS_FILE = "keys.json"
_FORMAT = 1
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")

ENABLED = "Enabled"
DISABLED = "Disabled"
PENDING_DELETION = "PendingDeletion"


@dataclass(frozen=True)
class Key:
    key_id: str
    arn: str
    material: bytes = field(repr=False)
    state: str
    policy_text: str
    policy: KeyPolicy = field(repr=False, compare=False)
    description: str
    created: float
    deletion_date: float | None = None
    tags: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class Alias:
    name: str
    arn: str
    key_id: str
    created: float


class KeyStore:
    """Thread-safe store; readers get immutable snapshots, writers persist before returning."""

    def __init__(self, state_dir: Path, account: str, region: str) -> None:
        self._path = state_dir / KEYS_FILE
        self.account = account
        self.region = region
        self._lock = threading.RLock()
        self._keys: dict[str, Key] = {}
        self._aliases: dict[str, Alias] = {}
        self._load()

    # ---- identifiers ---------------------------------------------------------------------------

    def key_arn(self, key_id: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account}:key/{key_id}"

    def alias_arn(self, name: str) -> str:
        return f"arn:aws:kms:{self.region}:{self.account}:{name}"

    def resolve(self, ref: str, *, allow_alias: bool = True) -> Key:
        """The key named by an id, key ARN, ``alias/name`` or alias ARN; NotFound otherwise."""
        with self._lock:
            self._expire_deleted()
            key_id = self._key_id_for(ref, allow_alias)
            key = self._keys.get(key_id) if key_id else None
            if key is None:
                if ref.startswith("alias/") or ":alias/" in ref:
                    raise NotFound(f"Alias {self._alias_display(ref)} is not found.")
                raise NotFound(f"Key '{self._key_display(ref)}' does not exist")
            return key

    def get(self, key_id: str) -> Key | None:
        with self._lock:
            self._expire_deleted()
            return self._keys.get(key_id)

    def _key_id_for(self, ref: str, allow_alias: bool) -> str | None:
        prefix = f"arn:aws:kms:{self.region}:{self.account}:"
        if _UUID.match(ref):
            return ref
        if ref.startswith(prefix + "key/"):
            return ref[len(prefix) + 4 :]
        if allow_alias and ref.startswith("alias/"):
            alias = self._aliases.get(ref)
            return alias.key_id if alias else None
        if allow_alias and ref.startswith(prefix + "alias/"):
            alias = self._aliases.get(ref[len(prefix) :])
            return alias.key_id if alias else None
        if ref.startswith("arn:") or ref.startswith("alias/"):
            return None
        raise NotFound(f"Invalid keyId '{ref[:128]}'")

    def _key_display(self, ref: str) -> str:
        return self.key_arn(ref) if _UUID.match(ref) else ref[:256]

    def _alias_display(self, ref: str) -> str:
        return self.alias_arn(ref) if ref.startswith("alias/") else ref[:256]

    # ---- keys ----------------------------------------------------------------------------------

    def create(
        self, *, policy_text: str, policy: KeyPolicy, description: str, tags: list[tuple[str, str]]
    ) -> Key:
        key_id = str(uuid.uuid4())
        key = Key(
            key_id=key_id,
            arn=self.key_arn(key_id),
            material=os.urandom(32),
            state=ENABLED,
            policy_text=policy_text,
            policy=policy,
            description=description,
            created=time.time(),
            tags=tuple(tags),
        )
        with self._lock:
            self._keys[key_id] = key
            self._persist()
        return key

    def update(self, key_id: str, change: Callable[[Key], Key]) -> Key:
        """Apply ``change`` to the current snapshot of a key and persist the result atomically."""
        with self._lock:
            current = self._keys.get(key_id)
            if current is None:
                raise NotFound(f"Key '{self.key_arn(key_id)}' does not exist")
            updated = change(current)
            self._keys[key_id] = updated
            try:
                self._persist()
            except BaseException:
                self._keys[key_id] = current
                raise
            return updated

    def keys(self) -> list[Key]:
        with self._lock:
            self._expire_deleted()
            return sorted(self._keys.values(), key=lambda k: (k.created, k.key_id))

    # ---- aliases -------------------------------------------------------------------------------

    def create_alias(self, name: str, key_id: str) -> Alias:
        with self._lock:
            if name in self._aliases:
                raise AlreadyExists(f"An alias with the name {self.alias_arn(name)} already exists")
            if key_id not in self._keys:
                raise NotFound(f"Key '{self.key_arn(key_id)}' does not exist")
            alias = Alias(name=name, arn=self.alias_arn(name), key_id=key_id, created=time.time())
            self._aliases[name] = alias
            try:
                self._persist()
            except BaseException:
                del self._aliases[name]
                raise
            return alias

    def aliases(self, key_id: str | None = None) -> list[Alias]:
        with self._lock:
            self._expire_deleted()
            found = [a for a in self._aliases.values() if key_id is None or a.key_id == key_id]
            return sorted(found, key=lambda a: a.name)

    # ---- deletion ------------------------------------------------------------------------------

    def _expire_deleted(self) -> None:
        """Keys past their deletion date go, with their aliases, as KMS deletes them after the window."""
        now = time.time()
        doomed = [
            k.key_id
            for k in self._keys.values()
            if k.state == PENDING_DELETION and k.deletion_date is not None and k.deletion_date <= now
        ]
        if not doomed:
            return
        for key_id in doomed:
            del self._keys[key_id]
        self._aliases = {n: a for n, a in self._aliases.items() if a.key_id not in doomed}
        self._persist()

    # ---- persistence ---------------------------------------------------------------------------

    def _persist(self) -> None:
        write_json_atomic(
            self._path,
            {
                "format": _FORMAT,
                "account": self.account,
                "region": self.region,
                "keys": {k.key_id: _key_to_json(k) for k in self._keys.values()},
                "aliases": {
                    a.name: {"key_id": a.key_id, "created": a.created} for a in self._aliases.values()
                },
            },
        )

    def _load(self) -> None:
        data = read_json(self._path)
        if data is None:
            return
        try:
            if data["format"] != _FORMAT or data["account"] != self.account or data["region"] != self.region:
                raise EmulatorStateError(
                    f"{KEYS_FILE} belongs to another account, region or format than credentials.json",
                    hint="keep keys.json and credentials.json of one state directory together",
                )
            for key_id, raw in data["keys"].items():
                self._keys[key_id] = _key_from_json(key_id, raw, self.key_arn(key_id))
            for name, raw in data["aliases"].items():
                self._aliases[name] = Alias(
                    name=name,
                    arn=self.alias_arn(name),
                    key_id=str(raw["key_id"]),
                    created=float(raw["created"]),
                )
        except EmulatorStateError:
            raise
        except (KeyError, TypeError, ValueError, PolicyError):
            raise EmulatorStateError(
                f"{KEYS_FILE} in the state directory is damaged",
                hint="restore it from a backup; the keys in it cannot be recovered otherwise",
            ) from None


def _key_to_json(key: Key) -> dict[str, Any]:
    return {
        "material": base64.b64encode(key.material).decode("ascii"),
        "state": key.state,
        "policy": key.policy_text,
        "description": key.description,
        "created": key.created,
        "deletion_date": key.deletion_date,
        "tags": [list(t) for t in key.tags],
    }


def _key_from_json(key_id: str, raw: dict[str, Any], arn: str) -> Key:
    if not _UUID.match(key_id):
        raise ValueError("bad key id")
    material = base64.b64decode(raw["material"], validate=True)
    if len(material) != 32:
        raise ValueError("bad key material")
    policy_text = str(raw["policy"])
    return Key(
        key_id=key_id,
        arn=arn,
        material=material,
        state=str(raw["state"]),
        policy_text=policy_text,
        policy=parse_policy(policy_text),
        description=str(raw["description"]),
        created=float(raw["created"]),
        deletion_date=None if raw.get("deletion_date") is None else float(raw["deletion_date"]),
        tags=tuple((str(k), str(v)) for k, v in raw.get("tags", [])),
    )


__all__ = ["DISABLED", "ENABLED", "PENDING_DELETION", "Alias", "Key", "KeyStore"]
