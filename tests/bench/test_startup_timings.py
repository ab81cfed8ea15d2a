"""Start-up timings (local/startup.py) and the enclave image's stat record (image_enclave.py):
no processes, no model."""

from __future__ import annotations

import os
import time

from nitro_llm_dev.local.image_enclave import _record_verified, _unchanged_since_verified, rootfs_stat_digest
from nitro_llm_dev.local.startup import StartupTimings, load_timings, render_timings


def _log_line(wall: float, text: str) -> str:
    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(wall)) + f",{int(wall % 1 * 1000):03d}"
    return f"{stamp} {text}\n"


def test_phases_overlap_and_the_enclave_log_fills_in_its_own(tmp_path):
    timings = StartupTimings()
    with timings.phase("image check"):
        pass
    launched = timings.now()
    base = timings.wall_origin + launched
    log = tmp_path / "enclave.log"
    log.write_text(
        _log_line(base - 30, "enclave INFO platform local: an earlier start")  # before this start: skipped
        + _log_line(base + 0.2, "enclave INFO platform local: listen unix:/run/nitro-llm/enclave.sock")
        + _log_line(base + 0.3, "enclave INFO inference threads=1 (configured auto)")
        + _log_line(base + 1.5, "enclave WARNING NSM over a socket (socket): local mode only")
        + _log_line(base + 1.6, "enclave INFO enclave listening on unix:/run/nitro-llm/enclave.sock")
        + _log_line(base + 1.7, "enclave INFO credentials received")
    )
    timings.add("gateway", launched, launched + 0.9)  # overlaps the enclave's phases
    timings.add_enclave_log(log, launched)
    names = [p.name for p in timings.phases]
    assert names[0] == "image check" and names[-1] == "enclave: credentials taken from the gateway"
    loaded = next(p for p in timings.phases if p.name.startswith("enclave: model loaded"))
    assert 1.1 < loaded.seconds < 1.3
    assert 1.6 < timings.total < 1.8
    timings.save(tmp_path / "startup.json")
    record = load_timings(tmp_path / "startup.json")
    assert record is not None and len(record["phases"]) == len(names)
    text = render_timings(record)
    assert "enclave: model loaded, KV cache allocated" in text and "#" in text


def test_a_changed_file_changes_the_stat_digest_even_with_its_times_restored(tmp_path):
    rootfs = tmp_path / "rootfs"
    (rootfs / "usr" / "lib").mkdir(parents=True)
    library = rootfs / "usr" / "lib" / "libx.so"
    library.write_bytes(b"original")
    _record_verified(tmp_path, rootfs, "ab" * 32)
    assert _unchanged_since_verified(tmp_path, rootfs, "ab" * 32)
    assert not _unchanged_since_verified(tmp_path, rootfs, "cd" * 32)  # another ramdisk: check again
    before = os.lstat(library)
    time.sleep(0.01)  # the change time moves on with the clock
    library.write_bytes(b"tampered")  # same size
    os.utime(library, ns=(before.st_atime_ns, before.st_mtime_ns))  # modification time put back
    assert not _unchanged_since_verified(tmp_path, rootfs, "ab" * 32)
    digest = rootfs_stat_digest(rootfs)
    (rootfs / "usr" / "lib" / "extra").write_bytes(b"")
    assert rootfs_stat_digest(rootfs) != digest
