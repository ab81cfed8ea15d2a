"""End to end with real processes and the real model: the product's main job."""

from __future__ import annotations

import dataclasses
import io
import json
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from nitro_llm.client.errors import ServiceRefusedError
from nitro_llm.client.kms_conversation import KmsConversation
from nitro_llm.kms.client import make_kms_client
from nitro_llm_dev.bench.leaks import scan

pytestmark = [pytest.mark.slow, pytest.mark.model]

CANARY = "CANARY-7f3e9a1c-PHI-Jane-Roe-448219937"


def enclave_stats(stack) -> dict:
    return httpx.get(f"{stack.gateway_url}/v1/enclave/stats", timeout=5).json()


def test_question_in_streamed_answer_out(stack):
    conv = KmsConversation(stack.client_config())
    chunks = list(
        conv.stream([{"role": "user", "content": "What color is the sky on a clear day?"}], max_tokens=24)
    )
    text = "".join(c.text for c in chunks)
    assert len(chunks) >= 3, "the answer should arrive as a stream of chunks"
    assert chunks[-1].final and chunks[-1].finish_reason in ("stop", "length")
    assert "blue" in text.lower()


def test_twenty_kilobyte_question(stack):
    filler = "The patient reports mild fatigue and no fever. " * 430  # ~20 KB, the seed capped at 4 KB
    question = filler + "\nIn one word: does the patient report fever?"
    assert len(question.encode()) >= 20_000
    conv = KmsConversation(stack.client_config())
    answer = conv.ask([{"role": "user", "content": question}], max_tokens=8)
    assert answer.strip()
    assert len(conv.last_wire.envelope) > 20_000


def test_ten_turn_chat_costs_one_kms_decrypt(stack):
    before = enclave_stats(stack)["kms_decrypt_calls"]
    conv = KmsConversation(stack.client_config())
    history: list[dict[str, str]] = []
    for turn in range(10):
        history.append({"role": "user", "content": f"Say the number {turn}."})
        history.append({"role": "assistant", "content": conv.ask(history, max_tokens=4)})
    assert enclave_stats(stack)["kms_decrypt_calls"] - before == 1


def test_parent_credentials_without_attestation_are_denied(stack):
    conv = KmsConversation(stack.client_config())
    header, envelope = conv.seal([{"role": "user", "content": "hello"}])
    parent = make_kms_client(stack.kms_url, stack.credentials()["enclave_role"], stack.region)
    with pytest.raises(parent.exceptions.ClientError) as info:
        parent.decrypt(CiphertextBlob=envelope.edk, EncryptionContext=header.encryption_context())
    assert info.value.response["Error"]["Code"] == "AccessDeniedException"


def test_the_gateway_is_given_the_enclave_roles_credentials_only(stack):
    """As on EC2: the data owner's and the admin's keys never reach the untrusted host's gateway
    (with them it could decrypt a captured data key without attestation)."""
    argv = stack.gateway.argv
    given = json.loads(Path(argv[argv.index("--credentials-file") + 1]).read_text())
    role = stack.credentials()["enclave_role"]
    assert given["access_key_id"] == role["access_key_id"]
    secrets = {json.dumps(stack.credentials()[p]["secret_access_key"]) for p in ("admin", "client")}
    running = Path(f"/proc/{stack.gateway.pid}/cmdline").read_bytes().decode()
    assert not any(s.strip('"') in json.dumps(given) + running for s in secrets)


def test_tampered_enclave_is_denied(stack):
    from rich.console import Console

    from nitro_llm_dev.local.demo import show_tampered_refused

    pcr0, outcome = show_tampered_refused(stack, Console(file=io.StringIO()))
    assert pcr0 != stack.pcrs["0"]
    assert "ANSWERED" not in outcome
    assert re.search(r"denied|AccessDenied", outcome, re.I), outcome


def test_enclave_has_no_network(stack):
    if not stack.isolated:
        pytest.skip("network namespaces are not available here (needs root and unshare)")
    port = stack.kms_url.rsplit(":", 1)[1]
    probe = (
        "import socket,sys\n"
        f"s=socket.socket(); s.settimeout(2)\n"
        f"sys.exit(0 if s.connect_ex(('127.0.0.1',{port})) else 3)\n"
    )
    result = subprocess.run(
        ["nsenter", f"--net=/proc/{stack.enclave_proc.pid}/ns/net", "python3", "-c", probe], timeout=30
    )
    assert result.returncode == 0, "the enclave's namespace could reach the KMS emulator directly"


def test_canary_never_reaches_gateway_logs_or_memory(stack):
    conv = KmsConversation(stack.client_config())
    answer = conv.ask([{"role": "user", "content": f"Repeat this code exactly: {CANARY}"}], max_tokens=48)
    assert answer  # the enclave really handled it
    gateway_log = stack.gateway.log_path.read_bytes()
    assert b"infer outcome=ok" in gateway_log  # the log is the real one, and it did see the request
    assert CANARY.encode() not in gateway_log
    # the same scanner as tests/hostile (and 'nitro-llm bench hostile'): memory, logs, files written
    report = scan([CANARY], pid=stack.gateway.pid, files=[stack.gateway.log_path], witness=b"/v1/infer")
    assert report.witness_found, "the memory scan must be able to find strings the gateway holds"
    assert report.hits == []


def test_gateway_refuses_garbage_with_typed_error(stack):
    auth = stack.client_config().auth_headers()  # past the gateway's token check, to the enclave
    r = httpx.post(f"{stack.gateway_url}/v1/infer", content=b"\x00garbage", headers=auth, timeout=30)
    frames_or_json = r.content
    assert r.status_code in (200, 400)
    assert b"error" in frames_or_json
    conv = KmsConversation(stack.client_config())
    assert conv.ask([{"role": "user", "content": "Say hi."}], max_tokens=4)  # still serving


def test_remote_errors_are_typed(stack):
    conv = KmsConversation(stack.client_config())
    conv.config = dataclasses.replace(conv.config, model="no-such-model")
    with pytest.raises(ServiceRefusedError) as info:
        conv.ask([{"role": "user", "content": "hello"}], max_tokens=4)
    assert info.value.code
