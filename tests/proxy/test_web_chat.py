"""The web chat in headless Debian chromium: ask, watch the answer stream in, see what was verified."""

import re
import shutil
from pathlib import Path

import pytest

from nitro_llm.proxy.app import create_app

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--no-first-run",
]

pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Debian's chromium is not installed")
sync_api = pytest.importorskip("playwright.sync_api")


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        try:
            yield b
        finally:
            b.close()


def test_web_chat_streams_an_answer_and_shows_the_verified_panel(echo_backend, serve, browser, tmp_path):
    backend = echo_backend(delay=0.15)
    with serve(create_app(backend)) as server:
        page = browser.new_page(viewport={"width": 1200, "height": 800})
        errors = []
        page.on("pageerror", lambda exc: errors.append(str(exc)))
        page.on("console", lambda msg: errors.append(msg.text) if msg.type == "error" else None)
        page.goto(server.url.replace("127.0.0.1", "localhost") + "/")
        page.wait_for_selector("#status.ok")
        assert "Verified enclave" in page.inner_text("#status")
        facts = page.inner_text("#facts")
        assert "a1" * 48 in facts and "9f" * 32 in facts and "attested" in facts
        assert "UNSAFE dev root" in page.inner_text("#warnings")
        assert page.is_enabled("#input")

        page.fill("#input", "Which PCRs does the enclave report, and why do they matter?")
        page.press("#input", "Enter")
        # Streaming: the answer is visible while still incomplete, then completes.
        page.wait_for_selector(".msg.assistant.streaming")
        partial = ""
        for _ in range(200):  # polled from here: the page's CSP forbids the eval wait_for_function needs
            partial = page.inner_text(".msg.assistant")
            if len(partial.split(" ")) >= 3:
                break
            page.wait_for_timeout(20)
        assert page.is_visible(".msg.assistant.streaming")  # still streaming when seen partially
        page.wait_for_selector(".meta")
        answer = page.inner_text(".msg.assistant")
        assert answer == "echo: Which PCRs does the enclave report, and why do they matter?"
        assert len(partial) < len(answer)
        assert backend.calls[0]["messages"][-1]["content"].startswith("Which PCRs")
        page.fill("#input", "Thanks!")
        # A screenshot of a test double belongs in the test's tmp dir; docs/webchat.png is regenerated
        # from the real stack (NITRO_LLM_UPDATE_DOCS=1, tests/e2e/test_attested.py).
        shot = tmp_path / "webchat.png"
        page.screenshot(path=str(shot))
        assert shot.stat().st_size > 10_000
        assert not errors, errors  # the CSP allowed the page's own script and style, nothing failed


def test_web_chat_blocks_when_verification_failed(echo_backend, serve, browser):
    backend = echo_backend(verified=False)
    with serve(create_app(backend)) as server:
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        page.goto(server.url.replace("127.0.0.1", "localhost") + "/")
        page.wait_for_selector("#status.bad")
        assert "blocked" in page.inner_text("#status").lower()
        assert "PCR0 differs" in page.inner_text("#reason")
        assert page.is_visible("#banner")
        assert not page.is_enabled("#input") and not page.is_enabled("#send")
        color = page.eval_on_selector("#status", "e => getComputedStyle(e).color")
        assert color == "rgb(198, 40, 40)"
    assert backend.calls == []


@pytest.mark.parametrize("finish_reason", ["length", "stop"])
def test_web_chat_marks_an_answer_cut_by_max_tokens(echo_backend, serve, browser, finish_reason):
    backend = echo_backend(finish_reason=finish_reason)
    with serve(create_app(backend)) as server:
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        page.goto(server.url.replace("127.0.0.1", "localhost") + "/")
        page.wait_for_selector("#status.ok")
        page.fill("#input", "tell me everything")
        page.press("#input", "Enter")
        page.wait_for_selector(".meta")
        assert page.inner_text(".msg.assistant") == "echo: tell me everything"
        notices = page.query_selector_all(".cut")
        if finish_reason == "length":
            assert len(notices) == 1 and "cut off" in notices[0].inner_text()
            assert "max_tokens" in notices[0].inner_text()
        else:
            assert notices == []


def test_web_chat_names_each_chat_so_its_turns_share_the_enclave_cache(echo_backend, serve, browser):
    """Every request of one chat carries the same random X-Nitro-Conversation; "New chat" starts an
    empty history under a new one (proxy/conversations.py maps each to its own secret)."""
    backend = echo_backend()
    with serve(create_app(backend)) as server:
        page = browser.new_page(viewport={"width": 1000, "height": 600})
        page.goto(server.url.replace("127.0.0.1", "localhost") + "/")
        page.wait_for_selector("#status.ok")
        for i, question in enumerate(["first question", "second question"]):
            page.fill("#input", question)
            page.press("#input", "Enter")
            page.wait_for_selector(f".meta >> nth={i}")
        page.click("#new-chat")
        assert page.query_selector_all(".msg") == []
        page.fill("#input", "a question in a new chat")
        page.press("#input", "Enter")
        page.wait_for_selector(".meta")
        assert page.inner_text(".msg.assistant") == "echo: a question in a new chat"
    first, second, third = (call.get("conversation") for call in backend.calls)
    assert first is not None and re.fullmatch(r"[0-9a-f]{32}", first)
    assert second == first
    assert third is not None and re.fullmatch(r"[0-9a-f]{32}", third) and third != first
    assert [len(call["messages"]) for call in backend.calls] == [1, 3, 1]
