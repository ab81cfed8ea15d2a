"""The proxy says exactly what was checked, by whom and when, and nothing more reassuring: "verified
here at HH:MM:SS: PCR0-2 pinned, nonce fresh, ... root ..." only when this machine verified the
enclave (attested protocol); "not verified on this machine" in the kms protocol, where the KMS key
policy checks the enclave; "enclave unreachable" while the stack is down. ``nitro-llm proxy``
chooses its protocol as ``ask`` and ``chat`` do. Real processes (the installed command, the real
gateway app and enclave server) and the web chat in headless Debian chromium."""

from __future__ import annotations

import datetime as dt
import re
import shutil
import time
from pathlib import Path

import httpx
import pytest
from cli_processes import ProxyProcess
from wire_tools import RunningServer

from nitro_llm.client.config import ClientConfig
from nitro_llm.proxy.app import create_app
from nitro_llm.proxy.confidential_backends import AttestedBackend, KmsBackend
from nitro_llm.proxy.verification import KMS_BADGE, verification_panel

KMS_TEXT = "not verified on this machine: the KMS key policy checks the enclave's PCRs"
VERIFIED = re.compile(
    r"verified here at (\d\d:\d\d:\d\d) UTC: PCR0-2 pinned, nonce fresh, .*"
    r"root dev\.nitro-enclaves \(SHA-256 [0-9a-f]{16}…\)"
)


def _once_changed(read, state: str, seconds: float = 15.0) -> dict:
    """``read()`` polled until its state is ``state`` (the gateway's /healthz may repeat the enclave's
    last answer for up to a second after it stopped); the last reading either way."""
    deadline = time.monotonic() + seconds
    panel = read()
    while panel["state"] != state and time.monotonic() < deadline:
        time.sleep(0.1)
        panel = read()
    return panel


# --- the states, as GET /v1/verification reports them -------------------------------------------


def test_the_kms_protocol_never_reports_verified(stack):
    deployment = stack()
    backend = KmsBackend(ClientConfig(gateway_url=deployment.gateway_url, key_id="alias/unused"))
    facts = backend.describe()
    assert facts["verified"] is None and "not this machine" in facts["verified_by"]
    panel = verification_panel(facts, backend.probe())
    assert panel["state"] == "kms" and panel["verified"] is None and panel["badge"] == KMS_TEXT == KMS_BADGE
    deployment.enclave.stop()
    down = _once_changed(lambda: verification_panel(backend.describe(), backend.probe()), "unreachable")
    assert down["state"] == "unreachable" and down["badge"] == "enclave unreachable"
    assert "its enclave does not" in down["unreachable_reason"]


def test_a_verified_session_is_not_reported_verified_while_the_enclave_is_down(stack):
    deployment = stack()
    backend = AttestedBackend(deployment.gateway_url, deployment.policy())
    up = verification_panel(backend.describe(), backend.probe())
    assert up["state"] == "verified" and up["verified"] is True
    stamp = dt.datetime.fromisoformat(up["verified_at"]).astimezone(dt.UTC).strftime("%H:%M:%S")
    match = VERIFIED.fullmatch(up["badge"])
    assert match and match.group(1) == stamp, up["badge"]
    deployment.enclave.stop()  # nothing answers the verified session any more
    down = _once_changed(lambda: verification_panel(backend.describe(), backend.probe()), "unreachable")
    assert down["state"] == "unreachable" and down["verified"] is None
    assert down["badge"] == "enclave unreachable"
    backend.close()


# --- `nitro-llm proxy`, as a user starts it ------------------------------------------------------


def test_the_proxy_defaults_to_attested_when_a_policy_is_available(stack, nitro_command):
    deployment = stack()
    proxy = ProxyProcess(*nitro_command)
    try:
        up = proxy.verification()
        deployment.enclave.stop()
        down = _once_changed(proxy.verification, "unreachable")
    finally:
        proxy.stop()
    assert up["protocol"] == "attested" and up["state"] == "verified" and up["verified"] is True
    assert VERIFIED.fullmatch(up["badge"]), up["badge"]
    assert "attested protocol ready: verified here at" in proxy.stderr
    assert "no client policy" not in proxy.stderr
    assert down["state"] == "unreachable" and down["verified"] is None
    assert down["badge"] == "enclave unreachable"


def test_without_a_policy_the_proxy_says_nothing_is_verified_here(stack, nitro_command):
    deployment = stack()
    deployment.policy_path.unlink()
    proxy = ProxyProcess(*nitro_command)
    try:
        panel = proxy.verification()
    finally:
        proxy.stop()
    assert panel["protocol"] == "kms" and panel["verified"] is None
    assert panel["state"] == "kms" and panel["badge"] == KMS_TEXT
    assert f"no client policy at {deployment.policy_path}: using the kms protocol" in proxy.stderr
    assert KMS_TEXT in proxy.stderr and "verified here" not in proxy.stderr


# --- the web chat's badge -------------------------------------------------------------------------

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


@pytest.fixture
def browser():
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed")
    sync_api = pytest.importorskip("playwright.sync_api")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"]
        )
        try:
            yield b
        finally:
            b.close()


def _open(browser, url: str):
    page = browser.new_page(viewport={"width": 1200, "height": 800}, timezone_id="UTC")
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(url.replace("127.0.0.1", "localhost") + "/")
    return page, errors


def test_web_chat_badge_in_the_attested_protocol_then_with_the_stack_down(stack, browser):
    deployment = stack()
    backend = AttestedBackend(deployment.gateway_url, deployment.policy())
    with RunningServer(create_app(backend)) as proxy:
        page, errors = _open(browser, proxy.url)
        page.wait_for_selector("#status.ok")
        badge = page.inner_text("#status")
        panel = httpx.get(proxy.url + "/v1/verification", timeout=30).json()
        assert badge == "✓ Verified enclave: " + panel["badge"].replace(" UTC", "")
        assert "PCR0-2 pinned" in badge and "nonce fresh" in badge
        assert "root dev.nitro-enclaves (SHA-256" in badge
        assert "Checked by" in page.inner_text("#facts") and page.is_enabled("#input")

        deployment.enclave.stop()
        verification = lambda: httpx.get(proxy.url + "/v1/verification", timeout=30).json()  # noqa: E731
        assert _once_changed(verification, "unreachable")["state"] == "unreachable"
        page.reload()
        page.wait_for_selector("#status.unreachable")
        assert page.inner_text("#status") == "✕ Enclave unreachable"
        assert "Verified" not in page.inner_text("#status")
        assert "its enclave does not" in page.inner_text("#reason")
        facts = page.inner_text("#facts")  # what was checked and when: history, not a current verification
        assert "Last verified here at" in facts and "Found unreachable at" in facts
        assert "Key valid until" not in facts
        assert "unreachable" in page.inner_text("#banner") and not page.is_enabled("#input")
        assert page.inner_text("#top .lock") == "!"
    assert not errors, errors
    backend.close()


def test_web_chat_badge_in_the_kms_protocol_claims_no_verification(stack, browser):
    deployment = stack()
    backend = KmsBackend(ClientConfig(gateway_url=deployment.gateway_url, key_id="alias/unused"))
    with RunningServer(create_app(backend)) as proxy:
        page, errors = _open(browser, proxy.url)
        page.wait_for_selector("#status.warn")
        assert page.inner_text("#status") == KMS_TEXT[0].upper() + KMS_TEXT[1:]
        assert "✓" not in page.inner_text("#top") and "Verified enclave" not in page.inner_text("body")
        assert "not this machine" in page.inner_text("#facts")
        assert page.is_enabled("#input")  # the kms protocol still answers: it is checked elsewhere
    assert not errors, errors
    backend.close()
