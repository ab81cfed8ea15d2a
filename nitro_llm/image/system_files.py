"""The few system files an enclave needs beyond the packages' own, written with fixed contents.

They stand in for what a Debian installation gets from maintainer scripts and base-files, limited
to what the enclave uses:

- the CA bundle (``update-ca-certificates`` would write it; boto3's TLS to KMS checks against it
  when told to use the system store, and Python's ``ssl`` defaults read it through OpenSSL's
  ``/usr/lib/ssl``, which the excluded ``openssl`` package would have linked to ``/etc/ssl``);
- ``/etc/passwd`` and ``/etc/group`` with root and the unprivileged user the server drops to;
- ``/etc/nsswitch.conf`` saying "files only": the enclave has no network, and without this file
  glibc tries DNS before ``/etc/hosts``, where the KMS name is mapped to the loopback forwarder;
- ``/etc/hosts`` with localhost; the enclave's init adds the KMS name at start-up;
- the mount points the Nitro init mounts over (``/dev``, ``/proc``, ``/sys``, ``/run``, ``/tmp``)
  and ``/var``, which nitro-cli's ramdisk always has.
"""

from __future__ import annotations

import os
from pathlib import Path

from nitro_llm.image.fs import ensure_dir, write_file

ENCLAVE_USER = "enclave"
ENCLAVE_UID = 10001

MOUNT_POINTS = {"dev": 0o755, "proc": 0o555, "sys": 0o555, "run": 0o755, "tmp": 0o1777, "var": 0o755}
CA_SOURCE_DIR = "usr/share/ca-certificates"
CA_BUNDLE = "etc/ssl/certs/ca-certificates.crt"

TEXT_FILES = {
    "etc/passwd": (
        "root:x:0:0:root:/root:/usr/sbin/nologin\n"
        f"{ENCLAVE_USER}:x:{ENCLAVE_UID}:{ENCLAVE_UID}::/nonexistent:/usr/sbin/nologin\n"
    ),
    "etc/group": f"root:x:0:\n{ENCLAVE_USER}:x:{ENCLAVE_UID}:\n",
    "etc/nsswitch.conf": "passwd: files\ngroup: files\nshadow: files\nhosts: files\n",
    "etc/hosts": "127.0.0.1\tlocalhost\n::1\tlocalhost\n",
}
SYMLINKS = {
    "usr/lib/ssl/certs": "/etc/ssl/certs",
    "usr/lib/ssl/cert.pem": "/etc/ssl/certs/ca-certificates.crt",
}


def ca_bundle(root: Path) -> bytes:
    """Every certificate ``ca-certificates`` ships, in path order, each ending in a newline (the
    bundle ``update-ca-certificates`` writes with every certificate enabled)."""
    parts = []
    for cert in sorted((root / CA_SOURCE_DIR).rglob("*.crt"), key=lambda p: p.relative_to(root).as_posix()):
        data = cert.read_bytes()
        parts.append(data if data.endswith(b"\n") else data + b"\n")
    return b"".join(parts)


def write_system_files(root: Path) -> None:
    for name, mode in sorted(MOUNT_POINTS.items()):
        path = root / name
        path.mkdir(exist_ok=True)
        os.chmod(path, mode)
    for rel, text in sorted(TEXT_FILES.items()):
        write_file(root / rel, text.encode("ascii"))
    write_file(root / CA_BUNDLE, ca_bundle(root))
    for rel, target in sorted(SYMLINKS.items()):
        path = root / rel
        ensure_dir(path.parent)
        if path.is_symlink() or path.exists():
            path.unlink()
        path.symlink_to(target)
