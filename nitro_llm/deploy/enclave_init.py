"""The enclave image's entrypoint: prepare the enclave's tiny world, then become the server.

A Nitro Enclave boots with no network but a down loopback interface, and nitro-cli ignores the
image's USER, so this runs as root. It:

1. brings up ``lo`` (the in-enclave KMS forwarder listens on it);
2. maps ``kms.<region>.amazonaws.com`` to 127.0.0.1 in /etc/hosts, so boto3 connects to the
   forwarder while still checking KMS's real TLS certificate for that name: TLS runs end to end
   enclave -> 127.0.0.1:443 -> vsock 3:8000 -> vsock-proxy -> KMS, and the parent relays only
   ciphertext;
3. lets the unprivileged server bind port 443 and open /dev/nsm;
4. drops to the image's unprivileged user and execs ``nitro-llm enclave serve``.

Written in Python rather than shell so that the final image needs no shell and no ``ip`` tool.
Each step is a small function; the ones that decide (hosts text, argv, settings) are pure.
"""

from __future__ import annotations

import fcntl
import logging
import os
import pwd
import socket
import struct
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.deploy.config import PARENT_CID
from nitro_llm.deploy.errors import EnclaveInitError

log = logging.getLogger("nitro_llm.enclave_init")

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
KMS_TLS_PORT = 443
NSM_DEVICE = Path("/dev/nsm")
UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")


@dataclass(frozen=True)
class EnclaveInitSettings:
    """Baked into the image at build time (``nitro-llm deploy build-eif`` passes them as build
    args), hence measured into PCR0: the enclave cannot be handed different ones at launch."""

    region: str
    port: int = 5000
    kms_proxy_port: int = 8000
    threads: int = 2
    ctx: int = 2048
    user: str = "enclave"
    nitro_llm: str = "/opt/venv/bin/nitro-llm"
    model: str | None = None
    hosts_path: Path = Path("/etc/hosts")

    @property
    def kms_host(self) -> str:
        suffix = "amazonaws.com.cn" if self.region.startswith("cn-") else "amazonaws.com"
        return f"kms.{self.region}.{suffix}"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> EnclaveInitSettings:
        region = env.get("NITRO_LLM_REGION", "")
        if not region:
            raise EnclaveInitError(
                "NITRO_LLM_REGION is not set in the image",
                hint="build the image with 'nitro-llm deploy build-eif', which bakes the region in",
            )
        try:
            return cls(
                region=region,
                port=int(env.get("NITRO_LLM_ENCLAVE_PORT", "5000")),
                kms_proxy_port=int(env.get("NITRO_LLM_KMS_PROXY_PORT", "8000")),
                threads=int(env.get("NITRO_LLM_THREADS", "2")),
                ctx=int(env.get("NITRO_LLM_CTX", "2048")),
                user=env.get("NITRO_LLM_USER", "enclave"),
                nitro_llm=env.get("NITRO_LLM_BIN", "/opt/venv/bin/nitro-llm"),
                model=env.get("NITRO_LLM_MODEL") or None,
            )
        except ValueError:
            raise EnclaveInitError(
                "a numeric NITRO_LLM_* setting in the image is not a number",
                hint="rebuild the image with 'nitro-llm deploy build-eif' from a valid deployment config",
            ) from None


def hosts_text(existing: str, kms_host: str) -> str:
    """/etc/hosts with ``kms_host`` pointing at loopback and no other entry for it."""
    kept = []
    for line in existing.splitlines():
        names = line.split("#", 1)[0].split()[1:]
        if kms_host in names:
            continue
        kept.append(line)
    if not any("localhost" in line.split("#", 1)[0].split()[1:] for line in kept):
        kept.insert(0, "127.0.0.1\tlocalhost")
    kept.append(f"127.0.0.1\t{kms_host}")
    return "\n".join(kept) + "\n"


def serve_argv(s: EnclaveInitSettings) -> list[str]:
    argv = [
        s.nitro_llm,
        "enclave",
        "serve",
        "--listen",
        f"vsock:any:{s.port}",
        "--kms-endpoint",
        f"https://{s.kms_host}",
        "--kms-forward-to",
        f"vsock:{PARENT_CID}:{s.kms_proxy_port}",
        "--region",
        s.region,
        "--nsm",
        "device",
        "--engine",
        "llama",
        "--threads",
        str(s.threads),
        "--ctx",
        str(s.ctx),
    ]
    if s.model:
        argv += ["--model", s.model]
    return argv


def bring_up_loopback(name: str = "lo") -> bool:
    """Set IFF_UP on the interface (the kernel then assigns 127.0.0.1/8 to lo). Returns whether it
    had to change anything."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        ifreq = struct.pack("16sh14x", name.encode(), 0)
        try:
            flags = struct.unpack("16sh14x", fcntl.ioctl(sock, SIOCGIFFLAGS, ifreq))[1]
            if flags & IFF_UP:
                return False
            fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sh14x", name.encode(), flags | IFF_UP))
        except OSError as exc:
            raise EnclaveInitError(
                f"cannot bring up the {name} interface ({exc.strerror})",
                hint="the init must run as root inside the enclave "
                "(nitro-cli runs the image's entrypoint as root)",
            ) from None
    return True


def map_kms_to_loopback(s: EnclaveInitSettings) -> None:
    try:
        existing = s.hosts_path.read_text() if s.hosts_path.exists() else ""
        s.hosts_path.write_text(hosts_text(existing, s.kms_host))
    except OSError as exc:
        raise EnclaveInitError(
            f"cannot write {s.hosts_path} ({exc.strerror})",
            hint="the init must run as root inside the enclave",
        ) from None


def allow_unprivileged_port(port: int, path: Path = UNPRIVILEGED_PORT_START) -> None:
    """Let the unprivileged server bind the forwarder's port (443) without keeping root for it."""
    try:
        current = int(path.read_text().strip())
        if current > port:
            path.write_text(f"{port}\n")
    except (OSError, ValueError) as exc:
        raise EnclaveInitError(
            f"cannot let the server bind port {port} ({type(exc).__name__})",
            hint="the init must run as root inside the enclave",
        ) from None


def hand_nsm_to(uid: int, gid: int, device: Path = NSM_DEVICE) -> None:
    if device.exists():
        os.chown(device, uid, gid)
        device.chmod(0o600)


def lookup_user(user: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise EnclaveInitError(
            f"the image has no user {user!r}", hint="rebuild the image from deploy/enclave/Dockerfile"
        ) from None
    if entry.pw_uid == 0:
        raise EnclaveInitError(f"user {user!r} is root", hint="the server must run as an unprivileged user")
    return entry


def drop_privileges(user: str) -> tuple[int, int]:
    entry = lookup_user(user)
    os.setgroups([])
    os.setgid(entry.pw_gid)
    os.setuid(entry.pw_uid)
    try:
        os.setuid(0)
    except PermissionError:
        pass
    else:  # pragma: no cover - would mean the kernel ignored setuid
        raise EnclaveInitError(
            "could not drop root privileges", hint="do not run this image with extra capabilities"
        )
    os.environ["HOME"] = entry.pw_dir
    os.environ["USER"] = user
    return entry.pw_uid, entry.pw_gid


def prepare(s: EnclaveInitSettings) -> None:
    """Everything that needs root, in order; then drop root."""
    if os.geteuid() != 0:
        raise EnclaveInitError(
            "the enclave init is not running as root",
            hint="it is meant to run as a Nitro Enclave's entrypoint; to try the image with docker, "
            "use 'docker run --user 0 --cap-add NET_ADMIN'",
        )
    bring_up_loopback()
    map_kms_to_loopback(s)
    allow_unprivileged_port(KMS_TLS_PORT)
    entry = lookup_user(s.user)
    hand_nsm_to(entry.pw_uid, entry.pw_gid)
    drop_privileges(s.user)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="enclave-init: %(message)s", stream=sys.stderr)
    try:
        settings = EnclaveInitSettings.from_env(os.environ)
        prepare(settings)
        argv = serve_argv(settings)
        log.info("loopback up, %s -> 127.0.0.1, serving on vsock port %d", settings.kms_host, settings.port)
        os.execv(argv[0], argv)  # noqa: S606 (fixed argv, no shell)
    except EnclaveInitError as exc:
        log.error("%s", exc)
        raise SystemExit(1) from None
    except OSError as exc:
        log.error("enclave init failed: %s", exc.strerror or type(exc).__name__)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()
