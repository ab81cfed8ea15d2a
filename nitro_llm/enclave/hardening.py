"""Make the enclave process a poor place to dig for keys and plaintext, as far as the OS allows.

Inside a real Nitro enclave there is no disk, no swap the host can read, and no debugger unless the
enclave runs in debug mode. Locally, and in any deployment mistake, the process is an ordinary one,
and the ordinary ways to read another process's secrets are: a core dump (written to disk on a
crash), ptrace or /proc/PID/mem by the same user, and swap. So at start-up, before any key exists:

- ``RLIMIT_CORE`` 0: a crash writes no core file, with its data keys and questions, anywhere;
- ``prctl(PR_SET_DUMPABLE, 0)``: no core dump either way, and /proc/PID/mem, ptrace attach and
  /proc/PID/environ are closed to the same user (only CAP_SYS_PTRACE still gets in);
- ``mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT)`` where the process may lock without a limit
  (CAP_IPC_LOCK or an unlimited RLIMIT_MEMLOCK): no page of the process, and so no key or
  question, is ever swapped out. ONFAULT locks pages as they are touched, so the model's mapping
  is not read in whole. With a finite limit the lock is skipped rather than risk allocations failing.

Each step is best effort and reported (the enclave's ``pong`` carries the report), never fatal:
refusing to serve because a local test box lacks a capability would help nobody. What Python lets
us wipe, we do elsewhere: released data keys live in ``bytearray``s that the data-key cache zeroes
on eviction; immutable ``bytes`` (a library's return value) cannot be wiped and wait for the GC,
which is one more reason for the memory lock.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import os
import resource
import sys
from dataclasses import asdict, dataclass
from typing import Any

log = logging.getLogger(__name__)

PR_SET_DUMPABLE = 4
PR_GET_DUMPABLE = 3
MCL_CURRENT = 1
MCL_FUTURE = 2
MCL_ONFAULT = 4
CAP_IPC_LOCK = 14


@dataclass(frozen=True)
class HardeningReport:
    core_dumps: str  # "off" | "failed: ..."
    dumpable: str  # "no" | "yes (...)"
    memory_lock: str  # "all (onfault)" | "none: ..."
    platform: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def all_applied(self) -> bool:
        return self.core_dumps == "off" and self.dumpable == "no" and self.memory_lock.startswith("all")


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)


def disable_core_dumps() -> str:
    try:
        resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    except (ValueError, OSError) as exc:
        return f"failed: {type(exc).__name__}"
    return "off"


def set_not_dumpable(libc: ctypes.CDLL | None) -> str:
    if libc is None:
        return "yes (prctl is Linux-only)"
    if libc.prctl(PR_SET_DUMPABLE, 0, 0, 0, 0) != 0:
        return f"yes (prctl failed: {os.strerror(ctypes.get_errno())})"
    return "no" if libc.prctl(PR_GET_DUMPABLE, 0, 0, 0, 0) == 0 else "yes (prctl had no effect)"


def may_lock_without_limit() -> bool:
    """True when mlockall(MCL_FUTURE) cannot make later allocations fail for want of lockable memory."""
    soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
    if soft == resource.RLIM_INFINITY:
        return True
    try:
        with open("/proc/self/status") as status:
            for line in status:
                if line.startswith("CapEff:"):
                    return bool(int(line.split()[1], 16) >> CAP_IPC_LOCK & 1)
    except OSError:
        pass
    return False


def lock_memory(libc: ctypes.CDLL | None) -> str:
    if libc is None:
        return "none: mlockall is Linux-only"
    if not may_lock_without_limit():
        soft, _ = resource.getrlimit(resource.RLIMIT_MEMLOCK)
        return f"none: RLIMIT_MEMLOCK is {soft} bytes and there is no CAP_IPC_LOCK"
    if libc.mlockall(MCL_CURRENT | MCL_FUTURE | MCL_ONFAULT) != 0:
        return f"none: mlockall failed ({os.strerror(ctypes.get_errno())})"
    return "all (onfault)"


def harden_process(*, lock: bool = True) -> HardeningReport:
    """Apply every protection the OS grants this process; call before any secret exists."""
    libc = _libc()
    report = HardeningReport(
        core_dumps=disable_core_dumps(),
        dumpable=set_not_dumpable(libc),
        memory_lock=lock_memory(libc) if lock else "none: disabled",
        platform=sys.platform,
    )
    level = logging.INFO if report.all_applied else logging.WARNING
    log.log(
        level,
        "hardening core_dumps=%s dumpable=%s memory_lock=%s",
        report.core_dumps,
        report.dumpable,
        report.memory_lock,
    )
    return report
