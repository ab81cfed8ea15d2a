"""Local mode runs the enclave image: the root filesystem that becomes the EIF's application ramdisk,
started through the image's own command, in namespaces standing in for the Nitro hypervisor.

**Building.** ``ensure_image`` builds the image (``nitro_llm.image.build``) once per content, under
``$NITRO_LLM_HOME/image/<key>/``, where the key digests every build input: the product modules the
entry reaches, the image builder itself, the locks, the llama-cpp-python wheel, the model, the
measured configuration, the command's extra arguments and SOURCE_DATE_EPOCH. A stack reuses a build
only after checking that its root filesystem still packs to the ramdisk its manifest lists, so a
file changed by hand in the cache cannot run under the PCRs of the original. Packing it again reads
all 320 MB (one to two seconds, most of a restarted stack's start), so a check that passed is
recorded with a digest of every entry's ``lstat`` (``verified-stat.json``), and the next start
re-packs only when that digest changed. The change time (``st_ctime``) is in it, which the kernel
sets on every write, rename, chmod, chown or new hard link and no user can set back (short of
changing the clock, which is root's, and root owns this cache anyway): editing a file, even with its
size and modification time restored, changes the digest, and the full check runs.

**Measuring.** The PCRs the emulated NSM reports (and the key policy pins) are those of a real EIF,
assembled with ``nitro_llm.image.eif`` exactly as nitro-cli does, from the build's application
ramdisk and a fixed set of local stand-ins for nitro-cli's blobs (``bzImage``, ``cmdline``, ``init``,
``nsm.ko``, generated here: text files saying what they are, never committed binaries). PCR2 is the
ramdisk's; PCR0 covers the stand-ins and the ramdisk; PCR1 the stand-ins alone. One changed byte
anywhere in the image changes PCR0 and PCR2, and KMS refuses the key. The stand-ins make PCR0/PCR1
differ from those of a real EIF (whose kernel is AWS's); PCR2 is the same.

**Running.** The enclave is started as root with ``unshare --net --mount --pid --fork --kill-child``
(a network namespace with only ``lo``, a private mount namespace, a PID namespace in which the
enclave is process 1, killed with its launcher); inside, a short ``sh`` script (``LAUNCH_SCRIPT``):

1. bind-mounts the image's ``rootfs/`` onto itself and remounts that bind read-only (nosuid, nodev);
2. mounts ``proc`` on ``/proc``; a tmpfs on ``/tmp`` (1777) and on ``/run`` (0755); a tmpfs on
   ``/dev`` holding only ``null``, ``zero``, ``random`` and ``urandom``, each bind-mounted from the
   host (the Nitro init mounts proc, tmpfs and a devtmpfs the same way);
3. bind-mounts the enclave's socket directory at ``/run/nitro-llm``: ``nsm.sock`` (the emulated NSM,
   served from outside by ``NsmEmulatorServer``), ``kms-relay.sock`` (the gateway's vsock-proxy
   stand-in) and ``enclave.sock`` (created by the enclave: its vsock stand-in);
4. ``exec env -i <the image's env> chroot ROOTFS <the image's cmd>``: the command and environment
   are read from the ramdisk's own ``cmd`` and ``env`` files, as the Nitro init reads them.

The image's entrypoint (``nitro_llm.enclave.main``) then finds ``/run/nitro-llm/nsm.sock`` (local
mode), brings ``lo`` up, drops to the image's ``enclave`` user and serves.

**Permissions.** The enclave serves as uid 10001, so it must reach the NSM and relay sockets, which
their servers create as root with mode 0600 (``nitro_llm.transport.listen``), and create its own
socket in the directory. Rather than open them to every local user (0666), the socket directory is
owned by 10001:10001 with mode 0700 and the stack hands each socket it serves to 10001 with
``chown``, keeping 0600: only root (the stack, the gateway) and the enclave's user can connect to
the NSM emulator, the relay, or the enclave.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from nitro_llm.enclave.boot import LOCAL_DEFAULT_REGION
from nitro_llm.enclave.config import EnclaveConfig, canonical_config
from nitro_llm.errors import NitroLLMError
from nitro_llm.image.progress import Progress
from nitro_llm_dev.local.processes import ManagedProcess, StackError

IMAGE_FORMAT = "nitro-llm-local-image-1"
"""Part of every cache key: bump it when what this module stores next to a build changes."""
ENCLAVE_UID = 10001  # nitro_llm.image.system_files.ENCLAVE_UID: the image's 'enclave' user
EIF_NAME = "local-standin.eif"
EIF_RECORD = "local-standin.json"
VERIFIED_STAT = "verified-stat.json"
"""The stat digest of the root filesystem when it last packed to the manifest's ramdisk."""
KEEP_BUILDS = 3
"""Cached builds kept (most recently used first); ~1.2 GB each (rootfs, tarball, ramdisk, EIF)."""

STANDIN_BLOBS: dict[str, bytes] = {
    "bzImage": b"nitro-llm local stand-in for the Nitro Enclaves kernel (blobs/bzImage).\n"
    b"Not a kernel: local mode runs the image in Linux namespaces. It only feeds PCR0 and PCR1.\n",
    "cmdline": b"nitro-llm-local-stand-in-for-the-nitro-kernel-command-line\n",
    "init": b"nitro-llm local stand-in for the Nitro bootstrap init (blobs/init).\n"
    b"Local mode's launcher does its job: chroot into rootfs/, mount proc, tmpfs and /dev, exec cmd.\n",
    "nsm.ko": b"nitro-llm local stand-in for the Nitro Secure Module driver (blobs/nsm.ko).\n"
    b"Local mode's NSM is the emulator served on /run/nitro-llm/nsm.sock.\n",
}

LAUNCH_SCRIPT = r"""
set -eu
root=$1 sockets=$2
shift 2
mount --bind "$root" "$root"
mount -o remount,bind,ro,nosuid,nodev "$root"
mount -t proc -o nosuid,nodev,noexec proc "$root/proc"
mount -t tmpfs -o nosuid,nodev,mode=1777,size=64m tmpfs "$root/tmp"
mount -t tmpfs -o nosuid,nodev,mode=0755,size=1m tmpfs "$root/run"
mount -t tmpfs -o nosuid,noexec,mode=0755,size=64k tmpfs "$root/dev"
for device in null zero random urandom; do
  : > "$root/dev/$device"
  mount --bind "/dev/$device" "$root/dev/$device"
done
mkdir -m 0755 "$root/run/nitro-llm"
mount --bind "$sockets" "$root/run/nitro-llm"
exec "$@"
"""


@dataclass(frozen=True)
class EnclaveImage:
    """A built (or derived) image, ready to run: its root filesystem, the command and environment
    its ramdisk holds, and the PCRs of its EIF."""

    directory: Path
    rootfs: Path
    ramdisk: Path
    ramdisk_sha256: str
    cmd: tuple[str, ...]
    env: dict[str, str]
    eif: Path
    pcrs: dict[int, str]
    lock_file: Path | None = None  # cached builds: held shared while a stack runs the image

    def pcr_hex(self) -> dict[str, str]:
        """As ``LocalStack.pcrs`` holds them: {"0": hex, "1": hex, "2": hex}."""
        return {str(index): self.pcrs[index] for index in (0, 1, 2)}


def images_dir(home: Path | None = None) -> Path:
    from nitro_llm.paths import state_dir

    path = (home or state_dir()) / "image"
    path.mkdir(parents=True, exist_ok=True)
    return path


class _Forward(Progress):
    """Image build progress lines to a callback (the stack's status line), or to stderr."""

    def __init__(self, callback: Callable[[str], None] | None) -> None:
        super().__init__(prefix="image")
        self._callback = callback

    def step(self, message: str) -> None:
        if self._callback is None:
            super().step(message)
        else:
            self._callback(f"enclave image: {message}")


# -- inputs and cache ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class ImageRequest:
    """What to build: the measured config, the model, and the image command's extra arguments."""

    config: EnclaveConfig
    region: str = LOCAL_DEFAULT_REGION
    model: Path | None = None  # None: the packaged default model

    def entry_args(self) -> tuple[str, ...] | None:
        """None: the canonical command (``--config`` only). The region and a custom model's name
        are arguments of the measured command, as they would be in a production image."""
        from nitro_llm.image.layout import CONFIG_PATH

        extra: list[str] = []
        if self.region != LOCAL_DEFAULT_REGION:
            extra += ["--region", self.region]
        if self.model is not None:
            extra += ["--model-name", self.model.stem.lower()]
        return ("--config", f"/{CONFIG_PATH}", *extra) if extra else None


def _sha256_file(path: Path) -> str:
    from nitro_llm.image.digest import file_sha256

    return file_sha256(path)


def build_key(request: ImageRequest, *, epoch: int, cache: Path) -> tuple[str, dict[str, Any]]:
    """(key, inputs): a digest of everything that decides the image's bytes."""
    from nitro_llm.image.lock import DEFAULT_LOCK_PATH
    from nitro_llm.image.modules import DEFAULT_ENTRY, import_graph, reachable
    from nitro_llm.image.python_deps import default_llama_wheel
    from nitro_llm.image.python_lock import DEFAULT_PYTHON_LOCK
    from nitro_llm.inference.model import DEFAULT_MODEL_FILE, DEFAULT_MODEL_SHA256

    graph = import_graph()  # one graph for the three questions: a third of the time of three
    modules = reachable(DEFAULT_ENTRY, graph=graph)
    builder = {
        f
        for name in ("nitro_llm.image.build", "nitro_llm.image.eif")
        for f in reachable(name, graph=graph).files
    }
    if request.model is None:
        model = {"name": DEFAULT_MODEL_FILE, "sha256": DEFAULT_MODEL_SHA256}  # the build enforces it
    else:
        model = {"name": request.model.name, "sha256": _sha256_file(request.model)}
    inputs = {
        "format": IMAGE_FORMAT,
        "entry": DEFAULT_ENTRY,
        "entry_args": request.entry_args(),
        "config": canonical_config(request.config.measured()).decode("utf-8"),
        "model": model,
        "debian_lock": _sha256_file(DEFAULT_LOCK_PATH),
        "python_lock": _sha256_file(DEFAULT_PYTHON_LOCK),
        "llama_wheel": _sha256_file(default_llama_wheel(cache / "wheels")),
        "epoch": epoch,
        "code": {p.relative_to(modules.root).as_posix(): _sha256_file(p) for p in modules.files},
        "builder": {p.relative_to(modules.root).as_posix(): _sha256_file(p) for p in sorted(builder)},
        "standin_blobs": {name: hashlib.sha256(data).hexdigest() for name, data in STANDIN_BLOBS.items()},
    }
    text = json.dumps(inputs, sort_keys=True, separators=(",", ":")).encode("utf-8")
    return hashlib.sha256(text).hexdigest()[:24], inputs


@contextlib.contextmanager
def _locked(path: Path, mode: int) -> Iterator[IO[bytes]]:
    handle = path.open("a+b")
    try:
        fcntl.flock(handle, mode)
        yield handle
    finally:
        handle.close()  # releases the lock


def hold_image(image: EnclaveImage) -> IO[bytes] | None:
    """A shared lock on a cached build for as long as the returned handle is open: pruning skips it."""
    if image.lock_file is None:
        return None
    handle = image.lock_file.open("a+b")
    fcntl.flock(handle, fcntl.LOCK_SH)
    return handle


def ensure_image(
    request: ImageRequest,
    *,
    home: Path | None = None,
    progress: Callable[[str], None] | None = None,
) -> EnclaveImage:
    """The image for ``request``: from the cache when a build of the same inputs is there and intact,
    else built now (about 12 s with warm download caches; the first build downloads ~40 MB)."""
    from nitro_llm.image.build import MANIFEST, cache_root, source_date_epoch

    say = progress or (lambda message: print(f"[image] {message}", file=sys.stderr, flush=True))
    root = images_dir(home)
    try:
        key, inputs = build_key(request, epoch=source_date_epoch(), cache=cache_root())
    except NitroLLMError as exc:
        raise StackError(f"cannot build the enclave image: {exc.message}", hint=exc.hint) from None
    directory = root / key
    lock_file = root / f"{key}.lock"  # shared while a stack runs the image; pruning needs it exclusive
    with _locked(root / f"{key}.build-lock", fcntl.LOCK_EX):  # one build of a key at a time
        if (directory / MANIFEST).is_file():
            say("checking the cached enclave image")
            image = _load(directory, lock_file)
            if image is not None:
                (directory / "last-used").touch()
                return image
            say("the cached enclave image changed since its build; building it again")
            with lock_file.open("a+b") as handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    raise StackError(
                        f"the cached enclave image {directory} changed since its build and a running "
                        "stack uses it",
                        hint="stop the other stack (nitro-llm up), then start again to rebuild it",
                    ) from None
                shutil.rmtree(directory)
        image = _build(request, directory, inputs, lock_file, say)
    _prune(root, keep={key})
    return image


def _build(
    request: ImageRequest,
    directory: Path,
    inputs: dict[str, Any],
    lock_file: Path,
    say: Callable[[str], None],
) -> EnclaveImage:
    from nitro_llm.image.build import build_image
    from nitro_llm.image.modules import DEFAULT_ENTRY

    staging = directory.with_name(directory.name + ".building")
    if staging.exists():
        shutil.rmtree(staging)
    say("building the enclave image (root filesystem, ramdisk, manifest)")
    model_sha256 = inputs["model"]["sha256"] if request.model is not None else None
    try:
        manifest = build_image(
            staging,
            model=request.model,
            model_sha256=model_sha256,
            config=request.config,
            entry=DEFAULT_ENTRY,
            entry_args=request.entry_args(),
            epoch=inputs["epoch"],
            progress=_Forward(say),
        )
        say("measuring the image: EIF from the ramdisk and local stand-in blobs")
        _write_eif(staging, staging / manifest.ramdisk.file, manifest.ramdisk.sha256)
    except NitroLLMError as exc:
        shutil.rmtree(staging, ignore_errors=True)
        raise StackError(f"building the enclave image failed: {exc.message}", hint=exc.hint) from None
    (staging / "inputs.json").write_text(json.dumps(inputs, indent=1, sort_keys=True) + "\n")
    staging.rename(directory)
    (directory / "last-used").touch()
    image = _load(directory, lock_file, verify=False)
    if image is None:  # pragma: no cover - just built
        raise StackError(f"the image just built in {directory} cannot be read")
    return image


def _load(directory: Path, lock_file: Path | None, *, verify: bool = True) -> EnclaveImage | None:
    """A cached build, or None when anything no longer matches its manifest."""
    from nitro_llm.image.build import MANIFEST, RAMDISK, ROOTFS_DIR

    try:
        manifest = json.loads((directory / MANIFEST).read_text())
        ramdisk_sha256 = manifest["outputs"]["ramdisk"]["sha256"]
        epoch = int(manifest["source_date_epoch"])
        record = json.loads((directory / EIF_RECORD).read_text())
    except (OSError, ValueError, KeyError, TypeError):
        return None
    ramdisk = directory / RAMDISK
    rootfs = directory / ROOTFS_DIR
    if record.get("ramdisk_sha256") != ramdisk_sha256 or record.get("blobs") != _blobs_digest():
        return None
    cmd, env = read_cmd_env(ramdisk)
    if verify and not _unchanged_since_verified(directory, rootfs, ramdisk_sha256):
        if rootfs_ramdisk_sha256(rootfs, cmd, env, epoch) != ramdisk_sha256:
            return None
        _record_verified(directory, rootfs, ramdisk_sha256)
    elif not verify:  # just built from this root filesystem
        _record_verified(directory, rootfs, ramdisk_sha256)
    return EnclaveImage(
        directory=directory,
        rootfs=rootfs,
        ramdisk=ramdisk,
        ramdisk_sha256=ramdisk_sha256,
        cmd=tuple(cmd),
        env=env,
        eif=directory / EIF_NAME,
        pcrs={int(k): v for k, v in record["pcrs"].items()},
        lock_file=lock_file,
    )


def rootfs_stat_digest(rootfs: Path) -> str:
    """SHA-256 over the ``lstat`` of ``rootfs`` and of every entry under it, in a fixed order: path,
    mode, owner, size, inode, link count, modification and change times in nanoseconds."""
    digest = hashlib.sha256()

    def add(path: str, rel: str) -> None:
        st = os.lstat(path)
        fields = (st.st_mode, st.st_uid, st.st_gid, st.st_size, st.st_ino, st.st_nlink,
                  st.st_mtime_ns, st.st_ctime_ns)  # fmt: skip
        digest.update(f"{rel}\0{fields}\n".encode("utf-8", "surrogateescape"))

    add(str(rootfs), ".")
    for dirpath, dirnames, filenames in os.walk(rootfs):
        dirnames.sort()
        for name in sorted([*dirnames, *filenames]):
            path = os.path.join(dirpath, name)
            add(path, os.path.relpath(path, rootfs))
    return digest.hexdigest()


def _unchanged_since_verified(directory: Path, rootfs: Path, ramdisk_sha256: str) -> bool:
    """Whether the root filesystem is, entry for entry, as it was when it last packed to the ramdisk."""
    try:
        record = json.loads((directory / VERIFIED_STAT).read_text())
    except (OSError, ValueError):
        return False
    if not isinstance(record, dict) or record.get("ramdisk_sha256") != ramdisk_sha256:
        return False
    try:
        return bool(record.get("stat_digest") == rootfs_stat_digest(rootfs))
    except OSError:
        return False


def _record_verified(directory: Path, rootfs: Path, ramdisk_sha256: str) -> None:
    record = {"ramdisk_sha256": ramdisk_sha256, "stat_digest": rootfs_stat_digest(rootfs)}
    tmp = directory / f"{VERIFIED_STAT}.tmp"
    tmp.write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    tmp.replace(directory / VERIFIED_STAT)


def _prune(root: Path, keep: set[str]) -> None:
    """Delete the least recently used builds beyond ``KEEP_BUILDS``, skipping any a stack holds.
    (A build is marked used when ``ensure_image`` returns it, just before its stack holds it: the
    most recently used ones, kept here, cover that moment.)"""
    for staging in root.glob("*.building"):  # left by a build that was killed
        with (root / f"{staging.name.removesuffix('.building')}.build-lock").open("a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # being built now
            shutil.rmtree(staging, ignore_errors=True)
    builds = []
    for directory in root.iterdir():
        stamp = directory / "last-used"
        if directory.is_dir() and stamp.is_file() and directory.name not in keep:
            builds.append((stamp.stat().st_mtime, directory))
    builds.sort(reverse=True)
    for _, directory in builds[max(0, KEEP_BUILDS - len(keep)) :]:
        lock_file = root / f"{directory.name}.lock"
        with lock_file.open("a+b") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                continue  # a running stack uses it
            shutil.rmtree(directory, ignore_errors=True)
            (root / f"{directory.name}.build-lock").unlink(missing_ok=True)
            lock_file.unlink(missing_ok=True)


# -- measuring -------------------------------------------------------------------------------------------


def _blobs_digest() -> str:
    text = json.dumps({k: v.hex() for k, v in sorted(STANDIN_BLOBS.items())}).encode()
    return hashlib.sha256(text).hexdigest()


def standin_blobs(directory: Path) -> Path:
    """Write the stand-in blobs into ``directory`` (idempotent) and return it."""
    directory.mkdir(parents=True, exist_ok=True)
    for name, data in STANDIN_BLOBS.items():
        path = directory / name
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
    return directory


def _write_eif(directory: Path, ramdisk: Path, ramdisk_sha256: str) -> dict[int, str]:
    """Assemble ``local-standin.eif`` and record its PCRs (``local-standin.json``)."""
    from nitro_llm.image.eif import build_eif

    blobs = standin_blobs(directory / "standin-blobs")
    measurements = build_eif(blobs, [ramdisk], directory / EIF_NAME)
    pcrs = {0: measurements.pcr0, 1: measurements.pcr1, 2: measurements.pcr2}
    record = {
        "note": "PCRs of an EIF built from this ramdisk and LOCAL STAND-IN blobs (local mode only)",
        "ramdisk_sha256": ramdisk_sha256,
        "blobs": _blobs_digest(),
        "pcrs": {str(k): v for k, v in pcrs.items()},
    }
    (directory / EIF_RECORD).write_text(json.dumps(record, indent=1, sort_keys=True) + "\n")
    return pcrs


class _HashSink:
    def __init__(self) -> None:
        self.digest = hashlib.sha256()

    def write(self, data: bytes) -> int:
        self.digest.update(data)
        return len(data)


def rootfs_ramdisk_sha256(rootfs: Path, cmd: list[str], env: dict[str, str], epoch: int) -> str:
    """SHA-256 of the ramdisk that ``rootfs`` packs into today (the builder's own walk and writer,
    into a hash instead of a file): equal to the manifest's exactly when no file has changed."""
    from nitro_llm.image.cpio import write_newc
    from nitro_llm.image.ramdisk import ramdisk_entries
    from nitro_llm.image.tree import walk

    sink = _HashSink()
    write_newc(ramdisk_entries(walk(rootfs), cmd, env), sink, mtime=epoch)  # type: ignore[arg-type]
    return sink.digest.hexdigest()


def read_cmd_env(ramdisk: Path) -> tuple[list[str], dict[str, str]]:
    """The ``cmd`` and ``env`` files at the top of an application ramdisk, read as the Nitro init
    reads them: one item per line, the trailing newline removed; ``env`` lines are NAME=value."""
    files: dict[str, bytes] = {}
    with ramdisk.open("rb") as f:
        for _ in range(8):  # they are the first two entries; a bounded look
            header = f.read(110)
            if len(header) < 110 or header[:6] != b"070701":
                break
            fields = [int(header[6 + 8 * i : 14 + 8 * i], 16) for i in range(13)]
            filesize, namesize = fields[6], fields[11]
            name = f.read(namesize)[:-1].decode("utf-8")
            f.read(-(110 + namesize) % 4)
            data = f.read(filesize)
            f.read(-filesize % 4)
            if name == "TRAILER!!!":
                break
            files[name] = data
            if "cmd" in files and "env" in files:
                break
    if "cmd" not in files or "env" not in files:
        raise StackError(f"{ramdisk} has no cmd/env files at its top level; it is not an application ramdisk")
    cmd = files["cmd"].decode("utf-8").splitlines()
    env = dict(line.split("=", 1) for line in files["env"].decode("utf-8").splitlines())
    return cmd, env


# -- derived images (tampered code, a missing library) -----------------------------------------------------


def derive_image(
    base: EnclaveImage,
    dest: Path,
    change: Callable[[Path], None],
    *,
    progress: Callable[[str], None] | None = None,
) -> EnclaveImage:
    """A copy of ``base`` with ``change(rootfs)`` applied, packed into its own ramdisk and EIF by the
    builder's own writers, so its PCRs are the measurement of the changed bytes.

    The copy hard-links the base's files (instant, no space); ``change`` must replace a file it edits
    (``replace_file``) rather than write into it, or it would edit the base image too.
    """
    from nitro_llm.image.ramdisk import write_ramdisk
    from nitro_llm.image.tree import normalise, walk

    say = progress or (lambda _message: None)
    manifest = json.loads((base.directory / "manifest.json").read_text())
    epoch = int(manifest["source_date_epoch"])
    if dest.exists():
        shutil.rmtree(dest)
    dest.mkdir(parents=True)
    rootfs = dest / "rootfs"
    say(f"copying the image into {dest}")
    shutil.copytree(base.rootfs, rootfs, symlinks=True, copy_function=_link_or_copy)
    change(rootfs)
    nodes = walk(rootfs)
    normalise(rootfs, nodes, epoch)
    say("packing the changed image into its ramdisk and EIF")
    info = write_ramdisk(nodes, list(base.cmd), base.env, dest / "application.cpio", epoch)
    pcrs = _write_eif(dest, info.path, info.sha256)
    return EnclaveImage(
        directory=dest,
        rootfs=rootfs,
        ramdisk=info.path,
        ramdisk_sha256=info.sha256,
        cmd=base.cmd,
        env=dict(base.env),
        eif=dest / EIF_NAME,
        pcrs=pcrs,
    )


def _link_or_copy(src: str, dst: str) -> None:
    try:
        os.link(src, dst)
    except OSError:  # another file system: a real copy
        shutil.copy2(src, dst)


def replace_file(path: Path, data: bytes) -> None:
    """Give ``path`` new content as a new file (breaking a hard link to the base image), same mode."""
    mode = path.stat().st_mode & 0o7777
    path.unlink()
    path.write_bytes(data)
    os.chmod(path, mode)


def append_comment(module: str = "opt/nitro-llm/app/nitro_llm/enclave/__init__.py") -> Callable[[Path], None]:
    """The demo's "small operator patch": one harmless comment line appended to a module."""

    def change(rootfs: Path) -> None:
        path = rootfs / module
        replace_file(path, path.read_bytes() + b"\n# operator patch: exfiltrate nothing (yet)\n")

    return change


def remove_file(rel: str) -> Callable[[Path], None]:
    def change(rootfs: Path) -> None:
        (rootfs / rel).unlink()

    return change


# -- running --------------------------------------------------------------------------------------------


def prepare_socket_dir(path: Path) -> None:
    """The directory mounted at /run/nitro-llm: owned by the enclave's user, 0700 (module docstring)."""
    path.mkdir(parents=True, exist_ok=True)
    for stale in ("nsm.sock", "enclave.sock", "kms-relay.sock"):
        (path / stale).unlink(missing_ok=True)
    os.chown(path, ENCLAVE_UID, ENCLAVE_UID)
    os.chmod(path, 0o700)


def share_with_enclave(socket_path: Path) -> None:
    """Hand a socket the stack serves (created root-owned, 0600) to the enclave's user."""
    os.chown(socket_path, ENCLAVE_UID, ENCLAVE_UID)


LAUNCH_TOOLS = ("unshare", "chroot", "mount", "env", "sh")


def image_enclave_available() -> bool:
    """Whether this process may run the image (root, and the launch tools on PATH)."""
    return os.geteuid() == 0 and all(shutil.which(tool) for tool in LAUNCH_TOOLS)


def check_can_launch() -> None:
    if os.geteuid() != 0:
        raise StackError(
            "running the enclave image needs root (mount and PID namespaces, chroot)",
            hint="run as root, or pass --enclave-from source for the source-tree enclave (a developer "
            "shortcut that does not run the image)",
        )
    for tool in LAUNCH_TOOLS:
        if shutil.which(tool) is None:
            raise StackError(f"running the enclave image needs {tool!r}, which is not on PATH",
                             hint="install util-linux and coreutils")  # fmt: skip


def launch_argv(image: EnclaveImage, socket_dir: Path) -> list[str]:
    """unshare + the mount script + ``env -i IMAGE_ENV chroot ROOTFS IMAGE_CMD`` (module docstring)."""

    def tool(name: str) -> str:
        found = shutil.which(name)
        if found is None:
            raise StackError(f"{name!r} is not on PATH", hint="install util-linux and coreutils")
        return found

    env_items = [f"{name}={value}" for name, value in sorted(image.env.items())]
    return [
        tool("unshare"),
        "--net",
        "--mount",
        "--pid",
        "--fork",
        "--kill-child",
        "--propagation",
        "private",
        "--",
        tool("sh"),
        "-c",
        LAUNCH_SCRIPT,
        "nitro-llm-enclave-launch",
        str(image.rootfs),
        str(socket_dir),
        tool("env"),
        "-i",
        *env_items,
        tool("chroot"),
        str(image.rootfs),
        *image.cmd,
    ]


def _children(pid: int) -> list[int]:
    try:
        return [int(p) for p in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except (OSError, ValueError):
        return []


@dataclass
class ImageEnclaveProcess(ManagedProcess):
    """The launcher (``unshare``) is the process started and stopped; ``pid`` is the enclave itself,
    its only child (PID 1 of the new namespace), so /proc checks look at the enclave, not unshare."""

    _found: dict[int, int] = field(default_factory=dict, repr=False)

    @property
    def pid(self) -> int:
        outer = super().pid
        if outer in self._found:
            return self._found[outer]
        waiter = threading.Event()
        for _ in range(100):  # bounded: up to 2 s for unshare to fork
            children = _children(outer)
            if children:
                self._found[outer] = children[0]
                return children[0]
            if not self.alive():
                break
            waiter.wait(0.02)
        return outer


def main(argv: list[str] | None = None) -> int:
    """``python -m nitro_llm_dev.local.image_enclave build``: build (or check) the image that
    ``nitro-llm up`` and ``nitro-llm demo`` run by default, so they start without building."""
    args = list(sys.argv[1:] if argv is None else argv)
    if args != ["build"]:
        print("usage: python -m nitro_llm_dev.local.image_enclave build", file=sys.stderr)
        return 2
    from nitro_llm_dev.local.stack import EnclaveOptions

    try:
        image = ensure_image(ImageRequest(EnclaveOptions().config()))
    except NitroLLMError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"enclave image {image.directory}")
    for index, value in sorted(image.pcrs.items()):
        print(f"PCR{index} {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
