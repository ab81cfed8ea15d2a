"""The enclave process against the real KMS emulator process: attestation decides who gets the key.

Real processes, as in local mode: the KMS emulator; a relay standing in for the gateway's
vsock-proxy; the enclave started through its CLI with the echo engine, its in-enclave forwarder on
loopback, the emulated NSM signing with a dev CA the emulator trusts. The key policy is built from
the PCRs ``nitro-llm enclave pcrs`` prints. The client side is plain boto3 + the protocol module.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

import nitro_llm
from nitro_llm.kms.client import make_kms_client
from nitro_llm.kms.key_policy import build_key_policy
from nitro_llm.protocol import frame_kinds
from nitro_llm.protocol.errors import EnclaveReportedError
from nitro_llm.protocol.frame_codec import encode_frame, read_frame
from nitro_llm.protocol.kms_envelope import KmsHeader, ResponseOpener, new_id, seal_request
from nitro_llm.transport import connect
from nitro_llm.transport.relay import Relay
from nitro_llm_dev.nsm import emulated_transport
from nitro_llm_dev.nsm.devca import DevCA
from nitro_llm_dev.nsm.server import NsmEmulatorServer

pytestmark = pytest.mark.slow

REGION = "us-east-1"
ALIAS = "alias/enclave-test"
CLI = [sys.executable, "-m", "nitro_llm.cli.main"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait(predicate, what: str, proc: subprocess.Popen, log: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc.poll() is not None:
            raise AssertionError(f"{what}: process exited {proc.returncode}\n{log.read_text()[-3000:]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: timed out\n{log.read_text()[-3000:]}")
        time.sleep(0.05)


def snapshot_code(root: Path) -> dict[str, str]:
    """Run the processes from a frozen copy of the package: PCRs measure the code tree, and a
    shared checkout may change under a running test. Returns the environment that selects it."""
    shutil.copytree(
        Path(nitro_llm.__file__).parent,
        root / "code" / "nitro_llm",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    return {**os.environ, "PYTHONPATH": str(root / "code")}


class Proc:
    def __init__(self, argv: list[str], log: Path, env: dict[str, str], cwd: Path):
        self.log = log
        self._file = log.open("wb")
        self.popen = subprocess.Popen(argv, stdout=self._file, stderr=subprocess.STDOUT, env=env, cwd=cwd)

    def stop(self) -> None:
        self.popen.terminate()
        try:
            self.popen.wait(10)
        except subprocess.TimeoutExpired:
            self.popen.kill()
            self.popen.wait(5)
        self._file.close()


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    root = tmp_path_factory.mktemp("stack")
    ca = DevCA.load_or_create(root / "dev-ca")
    env = snapshot_code(root)
    port_file = root / "kms.port"
    kms = Proc(
        [
            *CLI,
            "kms-emulator",
            "--port",
            "0",
            "--state-dir",
            str(root / "kms"),
            "--trust-root",
            str(ca.root_pem_path),
            "--port-file",
            str(port_file),
            "--region",
            REGION,
        ],
        root / "kms.log",
        env,
        root,
    )
    procs = [kms]
    nsm_servers: list[NsmEmulatorServer] = []
    relay = None
    try:
        _wait(
            lambda: port_file.exists() and port_file.read_text().strip().isdigit(), "kms", kms.popen, kms.log
        )
        kms_url = f"http://127.0.0.1:{port_file.read_text().strip()}"
        creds = json.loads((root / "kms" / "credentials.json").read_text())
        pcrs = json.loads(
            subprocess.run(
                [*CLI, "enclave", "pcrs", "--engine", "echo"], capture_output=True, check=True
            ).stdout
        )
        policy = build_key_policy(
            account=creds["account"],
            admin_arn=creds["admin"]["arn"],
            client_arns=[creds["client"]["arn"]],
            enclave_role_arn=creds["enclave_role"]["arn"],
            pcrs={i: pcrs[str(i)] for i in (0, 1, 2)},
        )
        admin = make_kms_client(kms_url, creds["admin"], REGION)
        key = admin.create_key(Policy=json.dumps(policy))["KeyMetadata"]
        admin.create_alias(AliasName=ALIAS, TargetKeyId=key["KeyId"])
        relay = Relay(f"unix:{root / 'kms-relay.sock'}", "tcp:" + kms_url.removeprefix("http://")).start()

        def start_enclave(name: str, *extra: str, nsm_clock=None) -> str:
            sock = root / f"{name}.sock"
            # The NSM runs outside the enclave, as on Nitro, and reports what this enclave measures to.
            measured = json.loads(
                subprocess.run(
                    [*CLI, "enclave", "pcrs", "--engine", "echo", *extra], capture_output=True, check=True
                ).stdout
            )
            nsm = NsmEmulatorServer(
                emulated_transport(
                    ca_path=root / "dev-ca",
                    pcrs={int(i): bytes.fromhex(v) for i, v in measured.items()},
                    debug="--debug-mode" in extra,
                    clock=nsm_clock,
                ),
                root / f"{name}-nsm.sock",
            ).start()
            nsm_servers.append(nsm)
            proc = Proc(
                [
                    *CLI,
                    "enclave",
                    "serve",
                    "--listen",
                    f"unix:{sock}",
                    "--kms-endpoint",
                    f"http://127.0.0.1:{_free_port()}",
                    "--kms-forward-to",
                    f"unix:{root / 'kms-relay.sock'}",
                    "--region",
                    REGION,
                    "--nsm",
                    nsm.address,
                    "--engine",
                    "echo",
                    *extra,
                ],
                root / f"{name}.log",
                env,
                root,
            )
            procs.append(proc)
            _wait(sock.exists, name, proc.popen, proc.log)
            address = f"unix:{sock}"
            role = creds["enclave_role"]
            handoff = frame_kinds.Credentials(
                role["access_key_id"], role["secret_access_key"], role.get("session_token"), None
            )
            assert call(address, frame_kinds.credentials_frame(handoff)) == [{"t": "ok"}]
            return address

        yield {
            "client": make_kms_client(kms_url, creds["client"], REGION),
            "parent": make_kms_client(kms_url, creds["enclave_role"], REGION),
            "admin": admin,
            "policy": policy,
            "start_enclave": start_enclave,
            "root": root,
            "procs": procs,
            "secrets": [c["secret_access_key"] for c in creds.values() if isinstance(c, dict)],
        }
    finally:
        for p in reversed(procs):
            p.stop()
        for server in nsm_servers:
            server.stop()
        if relay:
            relay.stop()


def call(address: str, frame: dict) -> list[dict]:
    with connect(address, 30) as sock:
        sock.sendall(encode_frame(frame))
        out = []
        while (reply := read_frame(sock)) is not None:
            out.append(reply)
        return out


class Chat:
    def __init__(self, kms):
        self.conversation_id = new_id()
        self.header_for_context = KmsHeader.new(
            model="default", conversation_id=self.conversation_id, key_id=ALIAS
        )
        key = kms.generate_data_key(
            KeyId=ALIAS, KeySpec="AES_256", EncryptionContext=self.header_for_context.encryption_context()
        )
        self.data_key, self.edk = key["Plaintext"], key["CiphertextBlob"]

    def ask(
        self, address: str, messages: list[dict], *, timestamp_ms: int | None = None, key_id: str = ALIAS
    ) -> str:
        header = KmsHeader.new(
            model="default", conversation_id=self.conversation_id, key_id=key_id, now_ms=timestamp_ms
        )
        envelope = seal_request(
            self.data_key, header, {"messages": messages, "max_tokens": 256, "temperature": 0.0}, edk=self.edk
        )
        replies = call(address, frame_kinds.infer_frame(envelope.to_cbor()))
        if replies[-1]["t"] == "error":
            raise frame_kinds.read_error(replies[-1])
        opener = ResponseOpener(self.data_key, header)
        text = "".join(opener.open(f)["text"] for f in replies)
        opener.finish()
        return text


def _pong(address: str) -> dict:
    (pong,) = call(address, frame_kinds.ping_frame())
    return pong


def test_attested_enclave_answers_and_ten_turns_cost_one_decrypt(stack):
    address = stack["start_enclave"]("good")
    chat = Chat(stack["client"])
    before = _pong(address)["kms_decrypt_calls"]
    messages = []
    for turn in range(10):
        messages.append({"role": "user", "content": f"turn {turn}: my MRN is 12345"})
        answer = chat.ask(address, messages)
        assert answer == messages[-1]["content"]
        messages.append({"role": "assistant", "content": answer})
    assert _pong(address)["kms_decrypt_calls"] - before == 1


def test_enclave_with_other_config_gets_no_key(stack):
    """Same code, one measured setting changed: other PCR0, and KMS refuses by policy."""
    address = stack["start_enclave"]("other-config", "--threads", "2")
    with pytest.raises(EnclaveReportedError) as err:
        Chat(stack["client"]).ask(address, [{"role": "user", "content": "hi"}])
    assert err.value.code == "kms_denied" and "AccessDenied" in err.value.message


def test_debug_mode_enclave_gets_no_key(stack):
    address = stack["start_enclave"]("debug", "--debug-mode")
    assert _pong(address)["debug_mode"] is True
    with pytest.raises(EnclaveReportedError) as err:
        Chat(stack["client"]).ask(address, [{"role": "user", "content": "hi"}])
    assert err.value.code == "kms_denied"


def test_parent_with_role_credentials_but_no_attestation_is_denied(stack):
    from botocore.exceptions import ClientError

    chat = Chat(stack["client"])
    with pytest.raises(ClientError) as err:
        stack["parent"].decrypt(
            CiphertextBlob=chat.edk, EncryptionContext={"nitro-llm:conversation": chat.conversation_id}
        )
    assert err.value.response["Error"]["Code"] == "AccessDeniedException"


def test_enclave_logs_hold_no_content(stack):
    address = stack["start_enclave"]("logs")
    Chat(stack["client"]).ask(address, [{"role": "user", "content": "CANARY-7f3a blood type AB-"}])
    assert stack["secrets"]
    for proc in stack["procs"]:
        log = proc.log.read_text()
        assert "CANARY" not in log
        assert not any(secret in log for secret in stack["secrets"])


def test_freshness_follows_the_nsm_clock_not_the_enclaves_own(stack):
    """The enclave process's own clock (the host's, here) has drifted 200 s ahead of the NSM's, which
    tells the true time. Clients are judged by the NSM's time: an honest one is answered, and ones
    far off either way, or on the enclave's drifted time, get ``stale_request``."""
    drift = dt.timedelta(seconds=200)
    address = stack["start_enclave"]("drifted", nsm_clock=lambda: dt.datetime.now(dt.UTC) - drift)
    chat = Chat(stack["client"])

    def true_ms(offset_s: float = 0) -> int:
        return int((time.time() - drift.total_seconds() + offset_s) * 1000)

    question = [{"role": "user", "content": "honest clock"}]
    assert chat.ask(address, question, timestamp_ms=true_ms()) == "honest clock"
    assert chat.ask(address, question, timestamp_ms=true_ms(100)) == "honest clock"  # within the window
    for offset_s in (-600, 600, drift.total_seconds()):  # far off, and the enclave's own drifted time
        with pytest.raises(EnclaveReportedError) as err:
            chat.ask(address, question, timestamp_ms=true_ms(offset_s))
        assert err.value.code == "stale_request"


def test_decrypt_names_the_headers_key_and_kms_refuses_another(stack):
    """The header names key B; the data key was made under the stack's key A. Decrypt passes KeyId=B,
    and KMS refuses with IncorrectKeyException (without KeyId it would have released A's key)."""
    admin = stack["admin"]
    other = admin.create_key(Policy=json.dumps(stack["policy"]))["KeyMetadata"][
        "KeyId"
    ]  # the enclave may use it
    admin.create_alias(AliasName="alias/another-key", TargetKeyId=other)
    address = stack["start_enclave"]("key-id")
    chat = Chat(stack["client"])
    assert chat.ask(address, [{"role": "user", "content": "right key"}]) == "right key"
    wrong = Chat(stack["client"])
    with pytest.raises(EnclaveReportedError) as err:
        wrong.ask(address, [{"role": "user", "content": "wrong key"}], key_id="alias/another-key")
    assert err.value.code == "kms_denied" and "IncorrectKeyException" in err.value.message
