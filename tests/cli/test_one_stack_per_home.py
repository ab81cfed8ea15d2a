"""One local stack per $NITRO_LLM_HOME: a second ``up`` or ``demo`` there is refused at once, names the
running stack, and leaves it alone (it used to delete the running stack's enclave socket on its way
to a late, buried "kms-emulator exited" error, and the first stack never recovered). Bad options are
refused before anything starts. Real processes: the installed command, ``up`` with the echo engine
and the source-tree enclave."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cli_processes import FAST_STACK

from nitro_llm_dev.local.instance import StackAlreadyRunning, StackClaim


def _snapshot(local: Path) -> dict[str, tuple[int, int, int]]:
    """Every file and socket of the state directory but the logs: (inode, size, mtime). A second
    stack that removed, rewrote or recreated anything (sockets, kms.port, tokens, client files)
    changes it."""
    out = {}
    for path in sorted(local.rglob("*")):
        if "logs" in path.relative_to(local).parts:
            continue
        st = path.lstat()
        out[str(path.relative_to(local))] = (st.st_ino, st.st_size, st.st_mtime_ns)
    return out


def test_a_second_start_in_the_same_home_is_refused_and_the_running_stack_keeps_answering(home, up, nitro):
    first = up()
    before = _snapshot(home / "local")
    assert (home / "local" / "run" / "enclave" / "enclave.sock").exists()
    logs = sorted(p.name for p in (home / "local" / "logs").iterdir())
    kms_log = (home / "local" / "logs" / "kms-emulator.log").stat().st_size  # a second emulator writes here
    attempts = [
        ("up", *FAST_STACK),
        ("demo", *FAST_STACK),
        ("up", "--model", "/nonexistent.gguf"),
        ("up", "--engine", "bogus"),
    ]
    for attempt in attempts:
        refused = nitro(*attempt, timeout=60)
        said = refused.stdout + refused.stderr
        assert refused.returncode == 2, (attempt, said)
        assert "[local_stack_running] a local stack is already running in" in said, (attempt, said)
        assert f"(pid {first.pid}, gateway {first.gateway_url})" in said, (attempt, said)
        assert "stop it with Ctrl-C in its terminal, or set NITRO_LLM_HOME" in said
        assert "kms-emulator" not in said and "stack stopped" not in said
    # Nothing of the running stack was touched, and nothing of a second one was started.
    assert _snapshot(home / "local") == before
    assert sorted(p.name for p in (home / "local" / "logs").iterdir()) == logs
    assert (home / "local" / "logs" / "kms-emulator.log").stat().st_size == kms_log
    answer = nitro("ask", "hi")
    assert answer.returncode == 0, answer.stderr
    assert answer.stdout.strip() == "hi"
    assert first.proc.poll() is None


def test_a_restarted_stack_comes_back_at_the_same_gateway_url(home, up, nitro):
    first = up()
    url = first.gateway_url
    # Piped output keeps each line whole: the PCR (96 hex digits) on one line, as a log needs it.
    first.wait_for_line(r"^PCR0 ")
    assert re.search(r"^PCR0 [0-9a-f]{96}$", first.output, re.M), first.output
    assert "stack stopped" in first.stop()
    assert not (home / "local" / "running.json").exists()
    second = up()  # the claim went with the first 'up'; the port it served on is taken again
    assert second.gateway_url == url
    assert nitro("ask", "hi").stdout.strip() == "hi"


@pytest.mark.parametrize(
    ("args", "said"),
    [
        (("--model", "/nonexistent.gguf"), "[local_stack_error] no model file at /nonexistent.gguf"),
        (("--engine", "bogus"), "[local_stack_error] no enclave engine named 'bogus' (pass --engine with"),
        (("--engine", "bogus", "--enclave-from", "source"), "no enclave engine named 'bogus'"),
    ],
    ids=["missing-model", "unknown-engine", "unknown-engine-source"],
)
def test_bad_options_are_refused_before_anything_starts(home, nitro, args, said):
    refused = nitro("up", *args, timeout=60)
    assert refused.returncode == 2
    assert said in refused.stdout, refused.stdout
    assert "stack stopped" not in refused.stdout
    # No process, socket, key or log: only the (released) lock that was checked first.
    assert sorted(p.name for p in (home / "local").iterdir()) == ["stack.lock"]


def test_a_gateway_port_in_use_is_refused_before_anything_starts(home, nitro):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        refused = nitro("up", *FAST_STACK, "--gateway-port", str(port), timeout=60)
    assert refused.returncode == 2
    assert f"[local_gateway_port_taken] something already listens on 127.0.0.1:{port}" in refused.stdout
    assert sorted(p.name for p in (home / "local").iterdir()) == ["stack.lock"]


HOLD = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from nitro_llm_dev.local.instance import StackClaim
    StackClaim(Path(sys.argv[1])).acquire()
    print("held", flush=True)
    sys.stdin.read()
    """
)


def test_the_claim_dies_with_its_holder(tmp_path):
    """A stack that crashed or was killed never blocks the next one: the kernel drops its lock."""
    root = tmp_path / "local"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(root)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        env=os.environ.copy(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "held"
        with pytest.raises(StackAlreadyRunning) as refused:
            StackClaim(root).acquire()
        assert f"(pid {holder.pid}, still starting, gateway not up yet)" in refused.value.message
    finally:
        holder.kill()  # no clean-up of its own: as if it crashed
        holder.wait()
    claim = StackClaim(root)
    claim.acquire()
    assert claim.held and (root / "running.json").exists()
    claim.release()
    assert not (root / "running.json").exists()
