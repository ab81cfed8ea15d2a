"""The parent instance, standing in: a copy-on-write view of this machine (overlayfs: the real root
read-only below, the instance's own changes in ``upper``), entered with chroot in a private mount
namespace. Its changes persist in ``upper`` between commands, like an instance's disk; the test reads
owners and modes there. ``shared`` (stand-in state, the fake S3, the call log) is bound in at the same
path so that writes to it are real on both sides.
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

INSTANCE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def run_on_instance(script: str, *, capture: bool = False) -> subprocess.CompletedProcess[str]:
    """Run a bash script as root on the instance; its environment is the instance's, not ours."""
    upper, shared = Path(os.environ["STANDIN_INSTANCE"]), os.environ["STANDIN_STATE"]
    work, merged = upper.with_name("work"), upper.with_name("merged")
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    keep = {k: v for k, v in os.environ.items() if k.startswith("STANDIN_")}
    env = " ".join(f"{k}={v}" for k, v in {**keep, "PATH": INSTANCE_PATH, "HOME": "/root"}.items())
    enter = (
        f"/usr/bin/mount -t overlay overlay -o lowerdir=/,upperdir={upper},workdir={work} {merged} && "
        f"/usr/bin/mount --bind /proc {merged}/proc && /usr/bin/mount --rbind /dev {merged}/dev && "
        f"/usr/bin/mount --bind {shared} {merged}{shared} && "
        f'exec /usr/sbin/chroot {merged} /usr/bin/env -i {env} /bin/bash -c "$0"'
    )
    return subprocess.run(
        [
            "/usr/bin/unshare",
            "--mount",
            "--propagation",
            "private",
            "--fork",
            "--",
            "sh",
            "-c",
            enter,
            script,
        ],
        capture_output=capture,
        text=True,
        check=False,
        cwd="/",
        timeout=300,
    )
