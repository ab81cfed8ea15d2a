"""The application ramdisk: the root filesystem laid out the way the Nitro bootstrap init expects.

Facts, from the sources nitro-cli builds with:

- aws-nitro-enclaves-cli ``enclave_build/src/yaml_generator.rs`` (``get_customer_ramfs``) and
  ``enclave_build/src/lib.rs``: linuxkit packs the container's filesystem under the prefix
  ``rootfs/`` and adds the directories ``rootfs/{dev,run,sys,var,proc,tmp}`` (0755) and two files
  at the archive's top level, ``cmd`` and ``env`` (0644).
- ``enclave_build/src/docker.rs`` (``write_config``): ``cmd`` holds the image's CMD (or, lacking
  one, its ENTRYPOINT), one argument per line, each line ending in ``\\n``; ``env`` holds its ENV,
  one ``NAME=value`` per line, same format.
- aws-nitro-enclaves-sdk-bootstrap ``linuxkit/0002-Remove-gzip-cpio-wrapper.patch``: the ramdisk
  is an uncompressed cpio "newc" archive (the kernel's initramfs format), zero-padded to 4 bytes.
- aws-nitro-enclaves-sdk-bootstrap ``init/init.c``: the init reads ``/env`` and ``/cmd`` line by
  line (``getline``, one trailing ``\\n`` removed: an argument cannot contain a newline), unlinks
  both, ``chdir``s and ``chroot``s into ``/rootfs``, mounts devtmpfs on ``/dev``, proc on ``/proc``,
  tmpfs on ``/run`` and ``/tmp``, ``/dev/shm`` and ``/dev/pts``, sysfs on ``/sys`` and cgroups
  under it (so those mount points must exist in ``rootfs/``), then ``fork``s, ``setsid``s and
  ``execvpe``s the command with exactly the environment from ``env`` (its own PATH only serves the
  lookup of ``argv[0]``), reaps children until that process exits, and reboots.

PCR2 is measured over this file's bytes (see ``pcr2_of_ramdisks``), so it is written
deterministically: entries sorted by path, owner 0:0, one mtime (``SOURCE_DATE_EPOCH``), inode
numbers in archive order (the ``cpio`` module's writer).
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from nitro_llm.attestation.pcr import ZERO_PCR, extend
from nitro_llm.image.cpio import CpioEntry, write_newc
from nitro_llm.image.digest import file_sha256
from nitro_llm.image.errors import LayoutError
from nitro_llm.image.tree import Node

ROOTFS_PREFIX = "rootfs"
NITRO_CLI_DIRS = ("dev", "proc", "run", "sys", "tmp", "var")
_CHUNK = 1 << 20


@dataclass(frozen=True)
class RamdiskInfo:
    path: Path
    size: int
    sha256: str
    pcr2: str  # hex, as nitro-cli prints it, for an EIF with this as its only application ramdisk


def lines_file(items: Sequence[str], what: str) -> bytes:
    """``cmd``/``env`` content: each item on its own line, every line ending in a newline."""
    for item in items:
        if "\n" in item or "\0" in item:
            raise LayoutError(f"{what} item {item!r} contains a newline or NUL; the init reads one per line")
    return "".join(f"{item}\n" for item in items).encode("utf-8")


def env_items(env: Mapping[str, str]) -> list[str]:
    for name in env:
        if not name or "=" in name:
            raise LayoutError(f"environment variable name {name!r} is empty or contains '='")
    return [f"{name}={value}" for name, value in sorted(env.items())]


def ramdisk_entries(nodes: list[Node], cmd: Sequence[str], env: Mapping[str, str]) -> list[CpioEntry]:
    present = {node.rel for node in nodes}
    missing = [d for d in NITRO_CLI_DIRS if d not in present]
    if missing:
        raise LayoutError(f"the root filesystem lacks the init's mount points: {', '.join(missing)}")
    if not cmd:
        raise LayoutError("the enclave command is empty; the init would start a shell the image lacks")
    entries = [
        CpioEntry("cmd", 0o644, data=lines_file(cmd, "cmd")),
        CpioEntry("env", 0o644, data=lines_file(env_items(env), "env")),
        CpioEntry(ROOTFS_PREFIX, 0o755, is_dir=True),
    ]
    for node in nodes:
        name = f"{ROOTFS_PREFIX}/{node.rel}"
        if node.kind == "dir":
            entries.append(CpioEntry(name, node.mode, is_dir=True))
        elif node.kind == "symlink":
            entries.append(CpioEntry(name, 0o777, symlink=node.link))
        else:
            entries.append(CpioEntry(name, node.mode, data=node.path.read_bytes()))
    return entries


def write_ramdisk(
    nodes: list[Node], cmd: Sequence[str], env: Mapping[str, str], out: Path, epoch: int
) -> RamdiskInfo:
    entries = ramdisk_entries(nodes, cmd, env)
    with out.open("wb") as f:
        write_newc(entries, f, mtime=epoch)
    return RamdiskInfo(out, out.stat().st_size, file_sha256(out), pcr2_of_ramdisks([out]).hex())


def pcr2_of_ramdisks(paths: Sequence[Path]) -> bytes:
    """PCR2 of an EIF whose application ramdisks are ``paths``, in order.

    aws-nitro-enclaves-image-format ``src/utils/mod.rs``: ``EifBuilder::measure`` feeds the bytes
    of every ramdisk after the first (the bootstrap one) to ``customer_app_hasher``, an
    ``EifHasher::new_without_cache`` (a plain SHA-384 stream, ``src/defs/eif_hasher.rs``), and
    ``get_pcrs`` finishes it with ``tpm_extend_finalize_reset``: SHA384(48 zero bytes || digest).
    No section header is hashed, so PCR2 depends on the ramdisk bytes alone.
    """
    digest = hashlib.sha384()
    for path in paths:
        with Path(path).open("rb") as f:
            while block := f.read(_CHUNK):
                digest.update(block)
    return extend(ZERO_PCR, digest.digest())
