"""The fleet key file and the ``fleet_keys`` frame: where each fleet key generation's KMS ciphertext is kept.

The file holds no secret: per generation, an id, a generation number and the KMS ciphertext of the
secret the key pair is derived from. It can sit on every parent host, in S3 or in a repository; only
KMS can open what it holds, and KMS opens it only for an attested enclave with the pinned PCRs. At
most two generations are live: ``current`` (what every replica attests and clients seal to) and,
during a rotation's overlap, ``previous`` (still opened, no longer attested). Layout, frame and
rotation steps: docs/CONTRACTS.md, "fleet key".

The gateway reads the file and relays it to its enclave as a ``fleet_keys`` frame; it can withhold
or replay the file but cannot change what a generation's ciphertext opens to (KMS checks the
encryption context, which names the generation, and the enclave checks which KMS key released it).
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import json
import os
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from nitro_llm.fleet.errors import FleetKeyFileError
from nitro_llm.protocol.errors import FrameError

FORMAT = "nitro-llm-fleet-key/1"
FRAME_TYPE = "fleet_keys"
PURPOSE_KEY = "nitro-llm:purpose"
PURPOSE = "fleet-key"
ID_KEY = "nitro-llm:fleet-key-id"
GENERATION_KEY = "nitro-llm:fleet-key-generation"
SECRET_SIZE = 32
"""The secret KMS generates (``KeySpec=AES_256``); the key pairs of every suite are derived from it."""
MAX_WRAPPED = 4096
MAX_GENERATION = 2**31 - 1

_ID = re.compile(r"[0-9a-f]{16}")
_KMS_KEY_ARN = re.compile(r"arn:aws[a-z-]*:kms:[a-z0-9-]+:\d{12}:key/[A-Za-z0-9-]{1,64}")
_FILE_FIELDS = frozenset({"format", "kms_key_arn", "current", "previous"})
_GENERATION_FIELDS = frozenset({"id", "generation", "wrapped", "created"})
_FRAME_FIELDS = frozenset({"t", "kms_key_arn", "current", "previous"})
_FRAME_GENERATION_FIELDS = frozenset({"id", "generation", "wrapped"})


def new_generation_id() -> str:
    return secrets.token_hex(8)


def check_kms_key_arn(value: Any, *, error: type[Exception] = FleetKeyFileError) -> str:
    """A key ARN, never an alias: an alias can be pointed at another key after the PCRs pin this one."""
    if not isinstance(value, str) or not _KMS_KEY_ARN.fullmatch(value):
        raise error("the fleet key's KMS key must be a key ARN (arn:aws:kms:REGION:ACCOUNT:key/ID)")
    return value


@dataclass(frozen=True)
class FleetKeyGeneration:
    """One fleet key: its id, its place in the rotation order, and the KMS ciphertext of its secret."""

    id: str
    generation: int
    wrapped: bytes = field(repr=False)
    created: str = ""  # ISO 8601 UTC, for people; not in the frame

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not _ID.fullmatch(self.id):
            raise ValueError("a fleet key id is 16 lowercase hex characters")
        if isinstance(self.generation, bool) or not isinstance(self.generation, int):
            raise ValueError("a fleet key generation is an integer")
        if not 1 <= self.generation <= MAX_GENERATION:
            raise ValueError(f"a fleet key generation is 1 to {MAX_GENERATION}")
        if not isinstance(self.wrapped, bytes) or not 0 < len(self.wrapped) <= MAX_WRAPPED:
            raise ValueError(f"a wrapped fleet key is 1 to {MAX_WRAPPED} bytes of KMS ciphertext")
        if not isinstance(self.created, str) or len(self.created) > 64:
            raise ValueError("'created' is an ISO 8601 time")

    def encryption_context(self) -> dict[str, str]:
        """What KMS binds the secret to: a blob wrapped for another purpose or generation does not open
        under this context, and a key policy can refuse a retired generation by its id."""
        return {PURPOSE_KEY: PURPOSE, ID_KEY: self.id, GENERATION_KEY: str(self.generation)}

    def to_frame(self) -> dict[str, Any]:
        return {"id": self.id, "generation": self.generation, "wrapped": self.wrapped}

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "generation": self.generation,
            "wrapped": base64.b64encode(self.wrapped).decode("ascii"),
            "created": self.created,
        }


@dataclass(frozen=True)
class FleetKeyFile:
    """The live generations of one fleet's key, all wrapped by one KMS key."""

    kms_key_arn: str
    current: FleetKeyGeneration
    previous: FleetKeyGeneration | None = None

    def __post_init__(self) -> None:
        check_kms_key_arn(self.kms_key_arn, error=ValueError)
        if self.previous is not None:
            if self.previous.generation >= self.current.generation:
                raise ValueError("the previous generation must be older than the current one")
            if self.previous.id == self.current.id:
                raise ValueError("the previous and current generations must differ")

    # -- the operator's steps (the KMS calls are in nitro_llm.fleet.operator) --------------------
    def rotated(self, new: FleetKeyGeneration) -> FleetKeyFile:
        """``new`` becomes current; the current one stays accepted (not attested) until ``retired``."""
        if new.generation <= self.current.generation:
            raise FleetKeyFileError("a rotation's generation must be above the current one")
        if self.previous is not None:
            raise FleetKeyFileError(
                f"generation {self.previous.generation} is still in its overlap",
                hint="run 'nitro-llm fleet-key retire' once every client has moved on, then rotate",
            )
        return replace(self, current=new, previous=self.current)

    def retired(self) -> FleetKeyFile:
        """End the overlap: only the current generation is opened from now on."""
        if self.previous is None:
            raise FleetKeyFileError("there is no previous generation to retire")
        return replace(self, previous=None)

    def generations(self) -> tuple[FleetKeyGeneration, ...]:
        return (self.current,) if self.previous is None else (self.current, self.previous)

    # -- the frame the gateway relays ------------------------------------------------------------
    def frame(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "t": FRAME_TYPE,
            "kms_key_arn": self.kms_key_arn,
            "current": self.current.to_frame(),
        }
        out["previous"] = self.previous.to_frame() if self.previous is not None else None
        return out

    def ids(self) -> tuple[str, str | None]:
        """(current id, previous id): what the enclave reports holding, compared by the gateway."""
        return self.current.id, self.previous.id if self.previous is not None else None

    # -- the file --------------------------------------------------------------------------------
    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "kms_key_arn": self.kms_key_arn,
            "current": self.current.to_json(),
            "previous": self.previous.to_json() if self.previous is not None else None,
        }

    def save(self, path: Path) -> None:
        """Written whole or not at all (a gateway may read it at any moment)."""
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")
        tmp.replace(path)

    @classmethod
    def load(cls, path: Path) -> FleetKeyFile:
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise FleetKeyFileError(f"cannot read the fleet key file {path} ({exc.strerror})") from None
        except ValueError:
            raise FleetKeyFileError(f"the fleet key file {path} is not JSON") from None
        return cls.from_json(raw, where=str(path))

    @classmethod
    def from_json(cls, raw: Any, *, where: str = "the fleet key file") -> FleetKeyFile:
        if not isinstance(raw, dict) or set(raw) != _FILE_FIELDS or raw["format"] != FORMAT:
            raise FleetKeyFileError(
                f"{where} must be {FORMAT} with exactly {', '.join(sorted(_FILE_FIELDS))}"
            )
        try:
            return cls(
                kms_key_arn=raw["kms_key_arn"],
                current=_generation_from_json(raw["current"]),
                previous=_generation_from_json(raw["previous"]) if raw["previous"] is not None else None,
            )
        except ValueError as exc:
            raise FleetKeyFileError(f"{where} is invalid: {exc}") from None


def _generation_from_json(raw: Any) -> FleetKeyGeneration:
    if not isinstance(raw, dict) or set(raw) != _GENERATION_FIELDS:
        raise ValueError(f"a generation has exactly {', '.join(sorted(_GENERATION_FIELDS))}")
    try:
        wrapped = base64.b64decode(raw["wrapped"], validate=True) if isinstance(raw["wrapped"], str) else None
    except binascii.Error:
        wrapped = None
    if wrapped is None:
        raise ValueError("'wrapped' must be base64")
    return FleetKeyGeneration(raw["id"], raw["generation"], wrapped, raw["created"])


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def read_fleet_keys_frame(frame: Mapping[str, Any]) -> FleetKeyFile:
    """The enclave's strict reader of what the gateway relayed: exact fields and types, else
    :class:`FrameError` (the enclave answers it with an error frame and keeps serving)."""
    if frame.get("t") != FRAME_TYPE or set(frame) != _FRAME_FIELDS:
        raise FrameError(f"a {FRAME_TYPE!r} frame has exactly {', '.join(sorted(_FRAME_FIELDS))}")
    try:
        return FleetKeyFile(
            kms_key_arn=check_kms_key_arn(frame["kms_key_arn"], error=ValueError),
            current=_generation_from_frame(frame["current"]),
            previous=_generation_from_frame(frame["previous"]) if frame["previous"] is not None else None,
        )
    except ValueError as exc:
        raise FrameError(f"bad {FRAME_TYPE!r} frame: {exc}") from None


def _generation_from_frame(raw: Any) -> FleetKeyGeneration:
    if not isinstance(raw, dict) or set(raw) != _FRAME_GENERATION_FIELDS:
        raise ValueError(f"a generation has exactly {', '.join(sorted(_FRAME_GENERATION_FIELDS))}")
    return FleetKeyGeneration(raw["id"], raw["generation"], raw["wrapped"])
