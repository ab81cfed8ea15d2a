"""The files the gateway needs before its first start, with the owners and modes it needs.

The gateway runs as its own user (``[gateway] user``) and refuses to start without its API-tokens
file, or off loopback without a TLS certificate and key. So, at first boot and idempotently after:

- the folder of each file exists; a folder created here is owned by the gateway's user, mode 0700,
  because ``nitro-llm gateway-token`` replaces the tokens file by renaming a new one into place,
  which needs write access to the folder (a root-owned 0755 folder fails with EACCES);
- the tokens file exists (no clients yet: every request is refused with 401 until a token is
  issued), owned by the gateway's user, mode 0600: it is read by the gateway and nobody else;
- the TLS key (0600) and self-signed certificate (0644), owned by the gateway's user, are made when
  missing, expiring within 30 days, or not naming every address asked for.

An existing file keeps its content; its owner and mode are put right. Each step is returned so the
operator sees what changed. With ``tokens=False`` only the TLS pair is looked after: the tokens file
is someone else's (on Kubernetes, a Secret every replica mounts read-only, so that a client's token
works on any replica).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import pwd
import stat
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.deploy import tls_cert
from nitro_llm.deploy.config import DeployConfig
from nitro_llm.deploy.errors import GatewayFilesError
from nitro_llm.gateway.auth import FORMAT as TOKENS_FORMAT
from nitro_llm.gateway.auth import parse_tokens

DIR_MODE = 0o700
TOKENS_MODE = 0o600
KEY_MODE = 0o600
CERT_MODE = 0o644


@dataclass(frozen=True)
class Step:
    path: Path
    action: str  # "created", "kept", "fixed owner/mode", "renewed"
    mode: int
    owner: str

    def __str__(self) -> str:
        return f"{self.action:<17} {self.path} ({self.owner}, {self.mode:04o})"


@dataclass(frozen=True)
class _Owner:
    name: str
    uid: int
    gid: int


def _owner(user: str) -> _Owner:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise GatewayFilesError(
            f"there is no user {user!r} to own the gateway's files",
            hint=f"create it first (useradd --system --shell /sbin/nologin {user}), as the stack's "
            "bootstrap does, or set [gateway] user",
        ) from None
    return _Owner(user, entry.pw_uid, entry.pw_gid)


def _place(path: Path, owner: _Owner, mode: int, action: str) -> Step:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode):  # never chown/chmod through a link someone planted
        raise GatewayFilesError(f"{path} is a symbolic link; the gateway's files must be plain files")
    if (info.st_uid, info.st_gid) != (owner.uid, owner.gid):
        os.chown(path, owner.uid, owner.gid, follow_symlinks=False)
        action = "fixed owner/mode" if action == "kept" else action
    if stat.S_IMODE(info.st_mode) != mode:
        path.chmod(mode)
        action = "fixed owner/mode" if action == "kept" else action
    return Step(path, action, mode, owner.name)


def _folder(path: Path, owner: _Owner) -> Step | None:
    """A folder made here belongs to the gateway's user; an existing one must let it write."""
    if path.is_dir():
        info = path.stat()
        if info.st_uid != owner.uid:
            raise GatewayFilesError(
                f"{path} belongs to uid {info.st_uid}, not {owner.name}: 'gateway-token' run as "
                f"{owner.name} could not replace the tokens file in it",
                hint=f"give the gateway's files a folder of their own (default {path.parent}/gateway), "
                f"or chown {owner.name} {path}",
            )
        return None
    path.mkdir(parents=True, mode=DIR_MODE)
    os.chown(path, owner.uid, owner.gid)
    path.chmod(DIR_MODE)
    return Step(path, "created", DIR_MODE, owner.name)


def _write_new(path: Path, data: bytes, owner: _Owner, mode: int) -> None:
    """Created with its final mode and owner before any byte is written: a key is never readable by
    anyone else, not even for a moment."""
    tmp = path.with_name(f".{path.name}.new")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    try:
        os.fchown(fd, owner.uid, owner.gid)
        os.fchmod(fd, mode)
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    tmp.replace(path)


def _tokens_file(path: Path, owner: _Owner) -> Step:
    if path.exists():
        try:
            parse_tokens(json.loads(path.read_text()))
        except (OSError, ValueError) as exc:
            why = type(exc).__name__
            raise GatewayFilesError(f"{path} exists but is not a tokens file ({why})") from None
        return _place(path, owner, TOKENS_MODE, "kept")
    empty = json.dumps({"format": TOKENS_FORMAT, "clients": {}}, indent=2).encode()
    _write_new(path, empty, owner, TOKENS_MODE)
    return Step(path, "created", TOKENS_MODE, owner.name)


def _tls_pair(cert: Path, key: Path, owner: _Owner, names: Sequence[str], now: dt.datetime) -> list[Step]:
    if cert.is_file() and key.is_file() and tls_cert.covers(cert.read_bytes(), names, now=now):
        return [_place(key, owner, KEY_MODE, "kept"), _place(cert, owner, CERT_MODE, "kept")]
    action = "renewed" if cert.exists() else "created"
    cert_pem, key_pem = tls_cert.self_signed(names, now=now)
    _write_new(key, key_pem, owner, KEY_MODE)
    _write_new(cert, cert_pem, owner, CERT_MODE)
    return [Step(key, action, KEY_MODE, owner.name), Step(cert, action, CERT_MODE, owner.name)]


def ensure_gateway_files(
    cfg: DeployConfig, *, addresses: Sequence[str] = (), now: dt.datetime | None = None, tokens: bool = True
) -> list[Step]:
    """Create or repair the gateway's tokens file (unless ``tokens`` is false) and TLS pair (see the
    module docstring)."""
    owner = _owner(cfg.gateway.user)
    now = now or dt.datetime.now(dt.UTC)
    gw = cfg.gateway
    tokens_file = gw.api_tokens_file if tokens else None
    files = [p for p in (tokens_file, gw.tls_cert, gw.tls_key) if p is not None]
    steps: list[Step] = []
    try:
        for folder in dict.fromkeys(cfg.path(p).parent for p in files):
            made = _folder(folder, owner)
            if made:
                steps.append(made)
        if tokens_file is not None:
            steps.append(_tokens_file(cfg.path(tokens_file), owner))
        if gw.tls_cert is not None and gw.tls_key is not None:
            steps += _tls_pair(cfg.path(gw.tls_cert), cfg.path(gw.tls_key), owner, addresses, now)
    except OSError as exc:
        raise GatewayFilesError(
            f"cannot set up {exc.filename} ({exc.strerror})", hint="run it as root on the instance"
        ) from None
    return steps
