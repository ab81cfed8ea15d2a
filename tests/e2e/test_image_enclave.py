"""The enclave the local stack runs is the enclave image, and the image is what answers.

The session's stack (conftest.py) is a default ``LocalStack``, as ``nitro-llm up`` starts it: the
image is built (or taken from the cache, checked) once per session and every test here reuses it.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import subprocess

import pytest

from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm_dev.local.image_enclave import derive_image, images_dir, read_cmd_env, remove_file
from nitro_llm_dev.local.processes import StackError
from nitro_llm_dev.local.stack import LocalStack

pytestmark = [pytest.mark.slow, pytest.mark.model]

LIBGOMP = "usr/lib/x86_64-linux-gnu/libgomp.so.1"


@pytest.fixture
def image_stack(stack: LocalStack) -> LocalStack:
    if not stack.runs_image:
        pytest.skip("the session's stack runs the source tree (running the image needs root)")
    return stack


def _status(pid: int) -> dict[str, str]:
    with open(f"/proc/{pid}/status") as f:
        return dict(line.rstrip("\n").split(":\t", 1) for line in f if ":\t" in line)


def test_the_image_stack_answers_a_question_end_to_end(image_stack):
    stack = image_stack
    image = stack.enclave_image
    assert image is not None and stack.pcrs == image.pcr_hex()
    answer = KmsConversation(stack.client_config()).ask(
        [{"role": "user", "content": "What colour is the sky on a clear day?"}], max_tokens=32
    )
    assert "blue" in answer.lower()
    # ... and what answered is the image's own command, as its ramdisk's init would start it
    pid = stack.enclave_proc.pid
    cmdline = open(f"/proc/{pid}/cmdline", "rb").read().split(b"\0")[:-1]
    assert [a.decode() for a in cmdline] == list(read_cmd_env(image.ramdisk)[0])
    assert os.readlink(f"/proc/{pid}/root") == str(image.rootfs)
    log = stack.enclave_proc.log_path.read_text()
    assert "platform local" in log and "kms_decrypt=ok" in log


def test_the_image_enclave_sees_only_lo_a_read_only_root_and_runs_unprivileged(image_stack):
    stack = image_stack
    image = stack.enclave_image
    pid = stack.enclave_proc.pid
    status = _status(pid)
    assert status["Uid"].split()[:2] == ["10001", "10001"] and status["Gid"].split()[0] == "10001"
    assert status["NSpid"].split()[-1] == "1"  # process 1 of its own PID namespace
    environ = open(f"/proc/{pid}/environ", "rb").read().split(b"\0")[:-1]
    env = dict(item.decode().split("=", 1) for item in environ)
    assert {k: v for k, v in env.items() if k not in ("HOME", "USER")} == image.env  # exactly the image's
    # Look from inside: its mount, network and PID namespaces and its root, with the image's Python.
    probe = (
        "import errno, json, os, socket\n"
        "try:\n"
        "    open('/written-by-a-probe', 'w')\n"
        "    write = 'ok'\n"
        "except OSError as exc:\n"
        "    write = errno.errorcode[exc.errno]\n"
        "print(json.dumps({'ifaces': [n for _, n in socket.if_nameindex()], 'write': write,\n"
        "    'ro': bool(os.statvfs('/').f_flag & os.ST_RDONLY), 'dev': sorted(os.listdir('/dev')),\n"
        "    'run': sorted(os.listdir('/run/nitro-llm'))}))\n"
    )
    argv = ["nsenter", f"--target={pid}", "--mount", "--net", "--pid", "--root", "--wd=/"]
    done = subprocess.run(
        [*argv, "/usr/bin/python3.11", "-P", "-s", "-c", probe],
        env=image.env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout)
    assert seen["ifaces"] == ["lo"]
    assert seen["ro"] is True and seen["write"] == errno.errorcode[errno.EROFS]
    assert seen["dev"] == ["null", "random", "urandom", "zero"]
    assert seen["run"] == ["enclave.sock", "kms-relay.sock", "nsm.sock"]
    assert not (image.rootfs / "written-by-a-probe").exists()


def test_an_image_without_libgomp_fails_at_start_naming_it(image_stack, tmp_path):
    """Proof that the image is what runs: the host has libgomp, a copy of the image without it
    cannot start, and says which library is missing."""
    base = image_stack.enclave_image
    assert (base.rootfs / LIBGOMP).exists()
    derived_dir = images_dir() / f"test-no-libgomp-{os.getpid()}"  # beside the cache: hard links work
    try:
        broken = derive_image(base, derived_dir, remove_file(LIBGOMP))
        assert broken.pcrs[2] != base.pcrs[2] and broken.pcrs[0] != base.pcrs[0]
        assert broken.pcrs[1] == base.pcrs[1]  # the (stand-in) kernel and bootstrap did not change
        assert (base.rootfs / LIBGOMP).exists()  # the copy did not touch the cached image
        stack = LocalStack(root=tmp_path / "stack", image=broken, supervise=False)
        with pytest.raises(StackError) as caught:
            with stack:
                pass
        log = (tmp_path / "stack" / "logs" / "enclave.log").read_text()
    finally:
        shutil.rmtree(derived_dir, ignore_errors=True)
    assert "libgomp.so.1" in str(caught.value)
    assert "enclave failed to start" in log and "libgomp.so.1: cannot open shared object file" in log
