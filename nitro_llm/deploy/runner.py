"""The one seam where deployment commands touch the machine: run an argv, or say what to install.

Kept thin on purpose: every decision (which flags, which files) is made by pure functions that are
tested without Docker or Nitro hardware; this module only executes them.
"""

from __future__ import annotations

import shutil
import subprocess

from nitro_llm.deploy.errors import ToolFailed, ToolMissing

INSTALL_HINTS = {
    "docker": (
        "install Docker and start it (Amazon Linux 2023: sudo dnf install -y docker && "
        "sudo systemctl enable --now docker; Debian/Ubuntu: sudo apt-get install docker.io), "
        "then add yourself to the 'docker' group"
    ),
    "nitro-cli": (
        "install the AWS Nitro Enclaves CLI (Amazon Linux 2023: sudo dnf install -y "
        "aws-nitro-enclaves-cli aws-nitro-enclaves-cli-devel) and add yourself to the 'ne' group; "
        "build-enclave works on any Linux with Docker, run-enclave only on an enclave-enabled EC2 instance"
    ),
    "aws": "install the AWS CLI v2 (preinstalled on Amazon Linux 2023)",
    "systemctl": "run this on the parent instance (systemd is needed to install the services)",
}


def require_tool(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise ToolMissing(
            f"'{name}' is not installed or not on PATH",
            hint=INSTALL_HINTS.get(name, f"install {name}"),
        )
    return path


def run(argv: list[str], *, capture_stdout: bool = False, timeout: float | None = None) -> str:
    """Run argv (progress on stderr goes straight to the operator); return stdout if captured."""
    require_tool(argv[0])
    try:
        done = subprocess.run(
            argv,
            stdout=subprocess.PIPE if capture_stdout else None,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ToolFailed(
            f"'{' '.join(argv[:2])}' did not finish within {timeout:.0f} s",
            hint="check the tool's own log, then retry",
        ) from None
    if done.returncode != 0:
        raise ToolFailed(
            f"'{' '.join(argv[:2])}' failed with exit code {done.returncode}",
            hint="its error is printed above; fix it and re-run "
            "(nitro-cli keeps logs in /var/log/nitro_enclaves/)",
        )
    return done.stdout or ""
