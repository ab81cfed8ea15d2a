"""The "attested" protocol end to end: real processes, the real model, this machine verifying the enclave.

The client checks the enclave's attestation against the policy `nitro-llm up` wrote (the PCRs it
measured, the dev root flagged unsafe) before a byte of the question leaves; the gateway relays
opaque bytes; the enclave opens the HPKE request and streams padded, ordered answer chunks.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import openai
import pytest
from wire_tools import RecordingTransport, RunningServer, decode_frames

from nitro_llm.attestation import DebugModeError, PcrMismatchError
from nitro_llm.client.attested_conversation import AttestedConversation
from nitro_llm.client.policy import ClientPolicy
from nitro_llm.protocol.errors import ChunkGapError, ChunkReplayError, ResponseTruncatedError
from nitro_llm.proxy.app import create_app
from nitro_llm.proxy.confidential_backends import AttestedBackend, KmsBackend
from nitro_llm_dev.local.processes import ManagedProcess, cli_argv, isolated_argv, wait_until
from nitro_llm_dev.local.stack import LocalStack, free_port
from nitro_llm_dev.local.tampered import CodeOverride, make_tampered_copy

pytestmark = [pytest.mark.slow, pytest.mark.model]

CANARY = "CANARY-attested-0b5e77-PHI-John-Doe"
SKY = "What color is the sky on a clear day?"
DOCS_SCREENSHOT = Path(__file__).resolve().parents[2] / "docs" / "webchat.png"


def _policy(stack: LocalStack) -> ClientPolicy:
    return ClientPolicy.load(stack.client_policy_path)


def _http(stack: LocalStack, transport: httpx.BaseTransport | None = None) -> httpx.Client:
    """The client's HTTP connection to a gateway, carrying the local stack client's API token."""
    return httpx.Client(
        transport=transport,
        headers=stack.client_config().auth_headers(),
        timeout=httpx.Timeout(10.0, read=300.0),
    )


def _attested(stack: LocalStack, transport=None, gateway: str | None = None, **kw) -> AttestedConversation:
    return AttestedConversation(
        gateway or stack.gateway_url, _policy(stack), http=_http(stack, transport), **kw
    )


def _stats(stack: LocalStack, gateway: str | None = None) -> dict:
    url = f"{gateway or stack.gateway_url}/v1/enclave/stats"
    return httpx.get(url, headers=stack.client_config().auth_headers(), timeout=10).json()


def _ask(conv, text: str, max_tokens: int = 24) -> list:
    return list(conv.stream([{"role": "user", "content": text}], max_tokens=max_tokens))


# --- the main path ---------------------------------------------------------------------------


def test_up_writes_a_policy_that_pins_the_measured_enclave(stack):
    data = json.loads(stack.client_policy_path.read_text())
    assert data["format"] == "nitro-llm-policy/1"
    assert data["expected_pcrs"] == {i: stack.pcrs[i] for i in ("0", "1", "2")}
    assert data["unsafe_dev_root"] is True and data["allow_debug"] is False
    assert data["trust_root"]["pem"] == (stack.dev_ca_dir / "root.pem").read_text()
    assert (stack.root / "client.json").exists()


@pytest.mark.parametrize("suite", ["x25519", "mlkem768-x25519"])
def test_attested_question_in_streamed_answer_out(stack, suite):
    recorder = RecordingTransport()
    conv = _attested(stack, recorder, suite=suite)
    before = _stats(stack)
    chunks = _ask(conv, SKY, max_tokens=32)
    text = "".join(c.text for c in chunks)
    assert "blue" in text.lower()
    assert len(chunks) >= 3 and chunks[-1].final and chunks[-1].finish_reason in ("stop", "length")
    assert recorder.paths() == [("GET", "/v1/attestation"), ("POST", "/v1/infer")]
    assert all(b"clear day" not in body for _, _, body in recorder.sent)  # only ciphertext left
    assert all(b"blue" not in body for body in recorder.infer_bodies)
    after = _stats(stack)
    assert after["answered"] - before["answered"] == 1
    assert after["kms_decrypt_calls"] == before["kms_decrypt_calls"]  # the attested path needs no KMS
    # Tokens of different lengths, padded: every chunk on the wire has the same size.
    frames = decode_frames(recorder.infer_bodies[0])
    assert len({len(f["ct"]) for f in frames}) == 1
    panel = conv.describe()
    assert panel["verified"] is True and panel["pcrs"]["0"] == stack.pcrs["0"]
    assert panel["hpke_suite"] == suite and panel["unsafe"]


def test_attested_chat_verifies_once(stack):
    recorder = RecordingTransport()
    conv = _attested(stack, recorder)
    history: list[dict[str, str]] = []
    for turn in range(3):
        history.append({"role": "user", "content": f"Say the number {turn}."})
        history.append({"role": "assistant", "content": conv.ask(history, max_tokens=4)})
    assert recorder.paths().count(("GET", "/v1/attestation")) == 1
    assert recorder.paths().count(("POST", "/v1/infer")) == 3


# --- the OpenAI SDK through the proxy, both protocols ----------------------------------------


@pytest.mark.parametrize("protocol", ["attested", "kms"])
def test_openai_sdk_through_the_proxy(stack, protocol):
    if protocol == "attested":
        backend = AttestedBackend(stack.gateway_url, _policy(stack), http=_http(stack))
    else:
        backend = KmsBackend(stack.client_config())
    with RunningServer(create_app(backend)) as proxy:
        client = openai.OpenAI(base_url=proxy.url + "/v1", api_key="unused", max_retries=0, timeout=300)
        assert [m.id for m in client.models.list()] == [backend.model_id]
        reply = client.chat.completions.create(
            model=backend.model_id, messages=[{"role": "user", "content": SKY}], max_tokens=32
        )
        stream = client.chat.completions.create(
            model=backend.model_id, messages=[{"role": "user", "content": SKY}], max_tokens=32, stream=True
        )
        pieces = [c.choices[0].delta.content or "" for c in stream if c.choices]
        verification = httpx.get(proxy.url + "/v1/verification", timeout=30).json()
    assert "blue" in reply.choices[0].message.content.lower()
    assert reply.choices[0].finish_reason in ("stop", "length")
    assert len([p for p in pieces if p]) >= 3 and "blue" in "".join(pieces).lower()
    assert verification["protocol"] == protocol
    # Only the attested protocol verifies the enclave on this machine; in the kms protocol the KMS
    # key policy does, and the proxy never claims a verification it did not make (issue 15, item 5).
    assert verification["verified"] is (True if protocol == "attested" else None)
    assert verification["state"] == ("verified" if protocol == "attested" else "kms")


# --- refused enclaves never see the question -------------------------------------------------


@contextmanager
def side_enclave(
    stack: LocalStack, name: str, *, code: CodeOverride | None = None, **options
) -> Iterator[str]:
    """Another enclave process (other code or options) behind its own gateway process; yields the
    gateway URL. The gateway's log is ``stack.logs / f"{name}-gateway.log"``."""
    sock = stack.run_dir / f"{name}.sock"
    sock.unlink(missing_ok=True)
    argv, nsm, _ = stack.prepare_enclave(name, dataclasses.replace(stack.enclave, **options), sock, code)
    enclave = ManagedProcess(
        f"{name}-enclave",
        isolated_argv(argv) if stack.isolated else argv,
        stack.logs / f"{name}-enclave.log",
        env=code.env if code else {},
        cwd=code.cwd if code else None,
    )
    port = free_port()
    gateway = ManagedProcess(
        f"{name}-gateway",
        cli_argv("gateway", "--enclave", f"unix:{sock}", "--port", str(port)),
        stack.logs / f"{name}-gateway.log",
    )
    url = f"http://127.0.0.1:{port}"
    enclave.start()
    try:
        wait_until(sock.exists, what=f"the {name} enclave to listen", timeout=180, process=enclave)
        gateway.start()
        wait_until(lambda: _healthy(url), what=f"the {name} gateway", timeout=60, process=gateway)
        yield url
    finally:
        gateway.stop()
        enclave.stop()
        nsm.stop()


def _healthy(url: str) -> bool:
    try:
        return httpx.get(f"{url}/healthz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


@pytest.mark.parametrize("kind", ["tampered-code", "debug-mode"])
def test_refused_enclave_receives_no_byte_of_the_question(stack, kind):
    with tempfile.TemporaryDirectory(prefix="nitro-llm-attested-") as tmp:
        if kind == "tampered-code":
            code, options, error = make_tampered_copy(Path(tmp)), {}, PcrMismatchError
        else:
            code, options, error = None, {"debug_mode": True}, (DebugModeError, PcrMismatchError)
        with side_enclave(stack, kind, code=code, **options) as url:
            recorder = RecordingTransport()
            conv = _attested(stack, recorder, gateway=url)
            with pytest.raises(error):
                _ask(conv, f"My patient id is {CANARY}; what should I tell them?")
            stats = _stats(stack, url)
            gateway_log = (stack.logs / f"{kind}-gateway.log").read_text()
    if kind == "tampered-code":
        assert stats["pcrs"]["0"] != stack.pcrs["0"]
    else:
        assert stats["debug_mode"] is True and set(stats["pcrs"]["0"]) == {"0"}
    assert recorder.paths() == [("GET", "/v1/attestation")]  # only the nonce left this machine
    assert all(CANARY.encode() not in body for _, _, body in recorder.sent)
    assert stats["requests"] == 0  # the enclave was asked nothing
    assert "attestation outcome=ok" in gateway_log and "infer" not in gateway_log


# --- a hostile gateway rewriting the answer -----------------------------------------------------


@pytest.mark.parametrize(
    ("tamper", "error"),
    [
        (lambda fs: fs[:-1], ResponseTruncatedError),
        (lambda fs: [fs[0], fs[0], *fs[1:]], ChunkReplayError),
        (lambda fs: [fs[1], fs[0], *fs[2:]], ChunkGapError),
    ],
    ids=["cut-short", "replayed", "swapped"],
)
def test_answer_rewritten_on_the_way_back_is_detected(stack, tamper, error):
    recorder = RecordingTransport(tamper=tamper)
    conv = _attested(stack, recorder)
    with pytest.raises(error):
        _ask(conv, SKY, max_tokens=6)
    assert len(decode_frames(recorder.infer_bodies[0])) >= 3  # the real answer had chunks to rewrite


# --- the web chat, on the real stack ----------------------------------------------------------


def test_web_chat_with_the_real_enclave(stack, tmp_path):
    import shutil

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    if not Path(chromium).exists():
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    backend = AttestedBackend(stack.gateway_url, _policy(stack), http=_http(stack))
    with RunningServer(create_app(backend)) as proxy, sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=chromium, args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 800})
            page.goto(proxy.url.replace("127.0.0.1", "localhost") + "/")
            page.wait_for_selector("#status.ok", timeout=60_000)
            facts = page.inner_text("#facts")
            assert stack.pcrs["0"] in facts.replace("\n", "").replace(" ", "")
            page.fill("#input", SKY)
            page.press("#input", "Enter")
            page.wait_for_selector(".meta", timeout=300_000)
            answer = page.inner_text(".msg.assistant")
            assert "blue" in answer.lower()
            shot = tmp_path / "webchat.png"
            page.screenshot(path=str(shot))
            assert shot.stat().st_size > 10_000
            if os.environ.get("NITRO_LLM_UPDATE_DOCS") == "1":
                shutil.copyfile(shot, DOCS_SCREENSHOT)
        finally:
            browser.close()
