"""nitro-cli, standing in: run-enclave starts the stand-in enclave as a process of its own,
describe-enclaves reports it in nitro-cli's JSON shape while that process lives, terminate-enclave
kills it, describe-eif measures an EIF (with the product's reader, which tests/image checks against
the format's definitions).

Like the real tool it refuses a second enclave of the same name, an EIF path that does not exist and
a terminate of an enclave that is not running; it waits for the enclave to come up before it
answers run-enclave (nitro-cli waits for the enclave's heartbeat). State lives in $STANDIN_STATE,
the enclave's socket is $STANDIN_ENCLAVE_SOCKET, its dev CA $STANDIN_DEVCA.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

from standins.recording import record


def _state_file() -> Path:
    return Path(os.environ["STANDIN_STATE"]) / "nitro-cli.json"


def _load() -> dict[str, Any]:
    path = _state_file()
    return json.loads(path.read_text()) if path.exists() else {}


def _save(state: dict[str, Any]) -> None:
    _state_file().parent.mkdir(parents=True, exist_ok=True)
    _state_file().write_text(json.dumps(state))


def alive(pid: int) -> bool:
    """Running and not a zombie (a dead enclave whose parent has not reaped it is gone too)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return False
    return fields[0] != "Z"


def _options(argv: list[str], flags: set[str]) -> dict[str, str | bool]:
    out: dict[str, str | bool] = {}
    it = iter(argv)
    for arg in it:
        if arg in flags:
            out[arg] = True
        elif arg.startswith("--"):
            value = next(it, None)
            if value is None:
                raise SystemExit(f"error: {arg} needs a value")
            out[arg] = value
        else:
            raise SystemExit(f"error: unexpected argument {arg!r}")
    return out


def _fail(message: str) -> int:
    print(f"[ E99 ] {message}", file=sys.stderr)
    return 1


def _measurements(eif: str) -> dict[str, str]:
    from nitro_llm.image.eif import describe_eif

    return describe_eif(Path(eif))["Measurements"]


def _wait_listening(path: str, proc: subprocess.Popen[bytes]) -> bool:
    for _ in range(400):  # bounded: nitro-cli gives up on a heartbeat that never comes
        if proc.poll() is not None:
            return False
        with socket.socket(socket.AF_UNIX) as probe:
            try:
                probe.connect(path)
                return True
            except OSError:
                pass
        try:
            proc.wait(timeout=0.05)
        except subprocess.TimeoutExpired:
            pass
    return False


def run_enclave(argv: list[str]) -> int:
    opts = _options(argv, {"--debug-mode", "--attach-console"})
    for required in ("--eif-path", "--cpu-count", "--memory"):
        if required not in opts:
            return _fail(f"run-enclave needs {required}")
    eif = str(opts["--eif-path"])
    if not Path(eif).is_file():
        return _fail(f"EIF {eif} does not exist")
    name = str(opts.get("--enclave-name", Path(eif).stem))
    state = _load()
    if state.get("name") == name and alive(state.get("pid", 0)):
        return _fail(f"an enclave named {name} is already running")
    measurements = _measurements(eif)
    pcrs = {k[3:]: v for k, v in measurements.items() if k.startswith("PCR")}
    debug = bool(opts.get("--debug-mode"))
    if debug:
        pcrs = {k: "00" * 48 for k in pcrs}
    sock = os.environ["STANDIN_ENCLAVE_SOCKET"]
    proc = subprocess.Popen(
        [os.environ.get("STANDIN_ENCLAVE", "nitro-llm-enclave-standin"), "--socket", sock,
         "--pcrs", json.dumps(pcrs), "--devca", os.environ["STANDIN_DEVCA"]],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip
    if not _wait_listening(sock, proc):
        proc.kill()
        return _fail("the enclave did not come up (no heartbeat)")
    cid = int(str(opts.get("--enclave-cid", "16")))
    info = {
        "EnclaveName": name,
        "EnclaveID": f"i-0123456789abcdef0-enc{proc.pid:016x}",
        "ProcessID": proc.pid,
        "EnclaveCID": cid,
        "NumberOfCPUs": int(str(opts["--cpu-count"])),
        "CPUIDs": [1, 3],
        "MemoryMiB": int(str(opts["--memory"])),
    }
    _save({"name": name, "pid": proc.pid, "info": info, "debug": debug, "measurements": measurements})
    record("nitro-cli", ["run-enclave", *argv], enclave_pid=proc.pid)
    print(json.dumps(info, indent=2))
    return 0


def describe_enclaves(argv: list[str]) -> int:
    state = _load()
    listed = []
    if state and alive(state["pid"]):
        listed.append(
            {
                **state["info"],
                "State": "RUNNING",
                "Flags": "DEBUG_MODE" if state["debug"] else "NONE",
                "Measurements": state["measurements"],
            }
        )
    print(json.dumps(listed, indent=2))
    return 0


def terminate_enclave(argv: list[str]) -> int:
    opts = _options(argv, set())
    state = _load()
    wanted = opts.get("--enclave-name")
    if not state or not alive(state["pid"]) or (wanted and wanted != state["name"]):
        return _fail(f"no running enclave named {wanted}")
    os.kill(state["pid"], 9)
    gone = threading.Event()
    for _ in range(400):  # like nitro-cli, answer once the enclave is really gone (bounded)
        if not alive(state["pid"]):
            break
        gone.wait(0.01)
    print(
        json.dumps(
            {"EnclaveName": state["name"], "EnclaveID": state["info"]["EnclaveID"], "Terminated": True}
        )
    )
    return 0


def describe_eif(argv: list[str]) -> int:
    opts = _options(argv, set())
    from nitro_llm.image.eif import describe_eif as describe

    print(json.dumps(describe(Path(str(opts["--eif-path"]))), indent=2))
    return 0


COMMANDS = {
    "run-enclave": run_enclave,
    "describe-enclaves": describe_enclaves,
    "terminate-enclave": terminate_enclave,
    "describe-eif": describe_eif,
}


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in COMMANDS:
        print(f"error: unknown command {argv[:1]}", file=sys.stderr)
        return 64
    if argv[0] != "run-enclave":
        record("nitro-cli", argv)
    return COMMANDS[argv[0]](argv[1:])
