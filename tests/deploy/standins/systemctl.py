"""systemctl, standing in: the unit files must exist where systemd looks (a missing one fails as
it does: "Unit file X does not exist."), enable links them into the target named by [Install]
WantedBy, --now and start check what systemd would check before running anything (the unit's
User exists, its ExecStart binary is executable, its ConditionPathExists). No process is started:
the services' behaviour is tested on their own (supervision and TLS tests)."""

from __future__ import annotations

import configparser
import pwd
import shlex
import sys
from pathlib import Path

from standins.recording import record

DIRS = (Path("/etc/systemd/system"), Path("/usr/lib/systemd/system"))


def _unit(name: str) -> Path | None:
    return next((d / name for d in DIRS if (d / name).is_file()), None)


def _parse(path: Path) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None, strict=False)
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    parser.read_string(path.read_text())
    return parser


def _start(name: str, path: Path) -> str | None:
    unit = _parse(path)
    condition = unit.get("Unit", "ConditionPathExists", fallback=None)
    if condition and not Path(condition).exists():
        return None  # skipped, not failed, as systemd does
    service = unit["Service"] if unit.has_section("Service") else {}
    user = service.get("User")
    if user and not service.get("DynamicUser"):
        try:
            pwd.getpwnam(user)
        except KeyError:
            return f"{name}: Failed to determine user credentials: No such process ({user})"
    start = service.get("ExecStart")
    if start:
        binary = Path(shlex.split(start.lstrip("-@+!"))[0])
        if not (binary.is_file() and binary.stat().st_mode & 0o111):
            return f"{name}: Failed to locate executable {binary}"
    return None


def main(argv: list[str]) -> int:
    record("systemctl", argv)
    args = [a for a in argv if not a.startswith("--")]
    now = "--now" in argv
    verb, units = (args[0], args[1:]) if args else ("", [])
    if verb == "daemon-reload":
        return 0
    if verb not in ("enable", "disable", "start", "stop", "restart", "is-enabled"):
        print(f"Unknown command verb {verb}.", file=sys.stderr)
        return 1
    for name in (u if "." in u else f"{u}.service" for u in units):  # systemctl's default suffix
        path = _unit(name)
        if path is None:
            print(f"Failed to {verb} unit: Unit file {name} does not exist.", file=sys.stderr)
            return 1
        wanted = _parse(path).get("Install", "WantedBy", fallback="multi-user.target")
        link = Path("/etc/systemd/system") / f"{wanted}.wants" / name
        if verb == "is-enabled":
            print("enabled" if link.is_symlink() else "disabled")
            if not link.is_symlink():
                return 1
        if verb == "enable":
            link.parent.mkdir(parents=True, exist_ok=True)
            if not link.is_symlink():
                link.symlink_to(path)
                print(f"Created symlink {link} → {path}.", file=sys.stderr)
        if verb == "disable" and link.is_symlink():
            link.unlink()
            print(f'Removed "{link}".', file=sys.stderr)
        if verb in ("start", "restart") or (verb == "enable" and now):
            failure = _start(name, path)
            if failure:
                print(f"Job for {name} failed: {failure}", file=sys.stderr)
                return 1
    return 0
