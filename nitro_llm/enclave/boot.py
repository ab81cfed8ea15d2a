"""What the enclave image's entrypoint does before it serves: find its platform, prepare the
enclave's tiny world as root, then drop root. (Moved here from the former ``deploy/enclave_init``:
the enclave image holds only enclave code, and the entrypoint no longer execs a CLI.)

The platform is detected once, from what the enclave was given, never guessed later:

- **Nitro**: ``/dev/nsm`` exists. Serve on ``vsock:any:PORT``; talk to the NSM device; reach KMS at
  ``https://kms.<region>.amazonaws.com`` through the in-enclave forwarder on 127.0.0.1:443, which
  relays to the parent's vsock-proxy at ``vsock:3:KMS_PROXY_PORT``. /etc/hosts maps the KMS name to
  127.0.0.1, so boto3 still checks KMS's real TLS certificate for that name: TLS runs end to end
  enclave -> 127.0.0.1:443 -> vsock 3:8000 -> vsock-proxy -> KMS, and the parent relays only
  ciphertext.
- **local mode**: ``/run/nitro-llm/nsm.sock`` exists (the local stack bind-mounts its socket
  directory there). Serve on ``unix:/run/nitro-llm/enclave.sock`` (the vsock stand-in), ask the
  emulated NSM outside the enclave over ``nsm.sock``, reach the KMS emulator at
  ``http://127.0.0.1:8443`` through the same forwarder, relayed to ``kms-relay.sock`` (the gateway's
  vsock-proxy stand-in).
- neither: a clear error naming both, rather than an enclave that attests with nothing.

Then, as root (a Nitro Enclave boots with a down loopback interface, and nitro-cli ignores the
image's USER): bring up ``lo``; on Nitro map the KMS name and let the unprivileged server bind port
443 and open /dev/nsm; lift the memory-lock limit so the server can still lock its memory (see
``hardening``); drop to the image's unprivileged user. In Python rather than shell, so the image
needs no shell and no ``ip`` tool. The functions that decide (hosts text, platform settings) are pure.
"""

from __future__ import annotations

import fcntl
import os
import pwd
import resource
import socket
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from nitro_llm.enclave.errors import EnclaveInitError

PARENT_CID = 3
"""The parent instance's vsock CID as every enclave sees it."""

SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1
KMS_TLS_PORT = 443
DEFAULT_PORT = 5000
DEFAULT_KMS_PROXY_PORT = 8000
ENCLAVE_USER = "enclave"  # the image's unprivileged user (nitro_llm/image/system_files.py)
NSM_DEVICE = Path("/dev/nsm")
UNPRIVILEGED_PORT_START = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
HOSTS = Path("/etc/hosts")

LOCAL_RUN_DIR = Path("/run/nitro-llm")
"""Local mode: the local stack's socket directory, bind-mounted here (dev/nitro_llm_dev/local)."""
LOCAL_NSM_SOCKET = LOCAL_RUN_DIR / "nsm.sock"
LOCAL_ENCLAVE_SOCKET = LOCAL_RUN_DIR / "enclave.sock"
LOCAL_KMS_RELAY_SOCKET = LOCAL_RUN_DIR / "kms-relay.sock"
LOCAL_KMS_PORT = 8443
"""Local mode: the in-enclave forwarder's port (inside the enclave's own network namespace)."""
LOCAL_DEFAULT_REGION = "us-east-1"
"""Local mode's region when the image's command names none (the local stack's default)."""


def kms_host(region: str) -> str:
    suffix = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"kms.{region}.{suffix}"


@dataclass(frozen=True)
class PlatformSettings:
    """Where the enclave listens, which NSM it asks and how it reaches KMS."""

    kind: Literal["nitro", "local"]
    listen_address: str
    region: str
    kms_endpoint: str
    kms_forward_to: str
    nsm_kind: Literal["device", "socket"]
    nsm_path: str  # the device path, or unix:PATH of the emulator's socket
    kms_host: str | None = None  # mapped to 127.0.0.1 in /etc/hosts (Nitro only)

    @property
    def forwarder_port(self) -> int:
        return int(self.kms_endpoint.rsplit(":", 1)[1]) if self.kind == "local" else KMS_TLS_PORT


def nitro_settings(
    region: str, port: int = DEFAULT_PORT, kms_proxy_port: int = DEFAULT_KMS_PROXY_PORT
) -> PlatformSettings:
    host = kms_host(region)
    return PlatformSettings(
        kind="nitro",
        listen_address=f"vsock:any:{port}",
        region=region,
        kms_endpoint=f"https://{host}",  # TLS checked against KMS's own name
        kms_forward_to=f"vsock:{PARENT_CID}:{kms_proxy_port}",
        nsm_kind="device",
        nsm_path=str(NSM_DEVICE),
        kms_host=host,
    )


def local_settings(region: str | None = None) -> PlatformSettings:
    return PlatformSettings(
        kind="local",
        listen_address=f"unix:{LOCAL_ENCLAVE_SOCKET}",
        region=region or LOCAL_DEFAULT_REGION,
        kms_endpoint=f"http://127.0.0.1:{LOCAL_KMS_PORT}",
        kms_forward_to=f"unix:{LOCAL_KMS_RELAY_SOCKET}",
        nsm_kind="socket",
        nsm_path=f"unix:{LOCAL_NSM_SOCKET}",
    )


def detect_platform(
    region: str | None,
    port: int = DEFAULT_PORT,
    kms_proxy_port: int = DEFAULT_KMS_PROXY_PORT,
    *,
    nsm_device: Path = NSM_DEVICE,
    nsm_socket: Path = LOCAL_NSM_SOCKET,
) -> PlatformSettings:
    """Nitro if the NSM device exists, local mode if the emulator's socket does, else an error."""
    if nsm_device.exists():
        if not region:
            raise EnclaveInitError(
                "no --region in the image's command: the enclave cannot name its KMS endpoint",
                hint="build the image with the KMS key's region (it is part of the measured command)",
            )
        return nitro_settings(region, port, kms_proxy_port)
    if nsm_socket.exists():
        return local_settings(region)
    raise EnclaveInitError(
        f"no NSM: neither {nsm_device} (a Nitro Enclave) nor {nsm_socket} (local mode) exists",
        hint="run the image with nitro-cli on a Nitro instance, or through 'nitro-llm up' locally",
    )


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
                hint="the entrypoint must run as root inside the enclave "
                "(nitro-cli runs the image's command as root)",
            ) from None
    return True


def map_kms_to_loopback(kms_host: str, hosts_path: Path = HOSTS) -> None:
    try:
        existing = hosts_path.read_text() if hosts_path.exists() else ""
        hosts_path.write_text(hosts_text(existing, kms_host))
    except OSError as exc:
        raise EnclaveInitError(
            f"cannot write {hosts_path} ({exc.strerror})",
            hint="the entrypoint must run as root inside the enclave",
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
            hint="the entrypoint must run as root inside the enclave",
        ) from None


def hand_nsm_to(uid: int, gid: int, device: Path = NSM_DEVICE) -> None:
    if device.exists():
        os.chown(device, uid, gid)
        device.chmod(0o600)


def allow_memory_lock() -> None:
    """Lift RLIMIT_MEMLOCK while still root, so that the unprivileged server may lock its memory
    (``hardening``: no page with a key or a question is ever swapped). Best effort: an enclave that
    cannot lock still serves, and says so in its hardening report."""
    try:
        resource.setrlimit(resource.RLIMIT_MEMLOCK, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (OSError, ValueError):
        pass


def lookup_user(user: str) -> pwd.struct_passwd:
    try:
        entry = pwd.getpwnam(user)
    except KeyError:
        raise EnclaveInitError(
            f"the image has no user {user!r}", hint="rebuild the image (nitro_llm/image writes /etc/passwd)"
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


def prepare(settings: PlatformSettings, user: str = ENCLAVE_USER, hosts_path: Path = HOSTS) -> None:
    """Everything that needs root, in order; then drop root."""
    if os.geteuid() != 0:
        raise EnclaveInitError(
            "the enclave entrypoint is not running as root",
            hint="it is meant to run as a Nitro Enclave's command (nitro-cli starts it as root) or "
            "through 'nitro-llm up'; to try the image with docker, use "
            "'docker run --user 0 --cap-add NET_ADMIN'",
        )
    bring_up_loopback()
    if settings.kms_host:
        map_kms_to_loopback(settings.kms_host, hosts_path)
    if settings.forwarder_port < 1024:
        allow_unprivileged_port(settings.forwarder_port)
    entry = lookup_user(user)
    if settings.nsm_kind == "device":
        hand_nsm_to(entry.pw_uid, entry.pw_gid, Path(settings.nsm_path))
    allow_memory_lock()
    drop_privileges(user)
