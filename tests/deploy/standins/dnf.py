"""dnf, standing in: ``install -y PKG...`` puts in place what each package gives the bootstrap (the
stand-in tools on their real paths, nitro-cli's stock units and its ``ne`` group); an unknown
package fails as dnf does ("No match for argument")."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from standins.recording import record

STOCK_UNIT = "[Unit]\nDescription={what}\n[Service]\nType={type}\nExecStart={exe}\n[Install]\nWantedBy=multi-user.target\n"


def _link(path: str, tool: str) -> None:
    target = Path(os.environ["STANDIN_BIN"]) / tool
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).unlink(missing_ok=True)
    Path(path).symlink_to(target)


def _nitro_cli() -> None:
    subprocess.run(["groupadd", "-r", "-f", "ne"], check=True)
    _link("/usr/bin/nitro-cli", "nitro-cli")
    for exe in ("/usr/bin/vsock-proxy", "/usr/bin/nitro-enclaves-allocator"):
        Path(exe).write_text("#!/bin/sh\nexit 0\n")
        Path(exe).chmod(0o755)
    units = Path("/usr/lib/systemd/system")
    units.mkdir(parents=True, exist_ok=True)
    (units / "nitro-enclaves-allocator.service").write_text(
        STOCK_UNIT.format(
            what="Nitro Enclaves Resource Allocator", type="oneshot", exe="/usr/bin/nitro-enclaves-allocator"
        )
    )
    (units / "nitro-enclaves-vsock-proxy.service").write_text(
        STOCK_UNIT.format(
            what="Nitro Enclaves vsock Proxy",
            type="simple",
            exe="/usr/bin/vsock-proxy 8000 kms.us-east-1.amazonaws.com 443",
        )
    )
    Path("/etc/nitro_enclaves").mkdir(parents=True, exist_ok=True)
    Path("/etc/nitro_enclaves/allocator.yaml").write_text("---\nmemory_mib: 512\ncpu_count: 2\n")


PACKAGES = {
    "aws-nitro-enclaves-cli": _nitro_cli,
    "git": lambda: _link("/usr/bin/git", "git"),
    "python3.11": lambda: _link("/usr/bin/python3.11", "python3.11"),
    "aws-cfn-bootstrap": lambda: _link("/opt/aws/bin/cfn-signal", "cfn-signal"),
}


def main(argv: list[str]) -> int:
    record("dnf", argv)
    if not argv or argv[0] != "install":
        print(f"stand-in dnf: only 'install' is known, not {argv[:1]}", file=sys.stderr)
        return 1
    names = [a for a in argv[1:] if not a.startswith("-")]
    unknown = [n for n in names if n not in PACKAGES]
    if unknown:
        print(
            f"No match for argument: {unknown[0]}\nError: Unable to find a match: {' '.join(unknown)}",
            file=sys.stderr,
        )
        return 1
    for name in names:
        PACKAGES[name]()
    print("Complete!")
    return 0
