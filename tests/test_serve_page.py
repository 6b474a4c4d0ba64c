"""The chat page in real headless Chromium (Debian's `chromium`, driven by Playwright): upload a picture,
ask, watch the answer stream in, ask a follow-up, clear. The screenshot is saved to
test-artifacts/serve_page.png. The answers shown must be the model's own greedy answers."""
from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
from helpers import LiveServer
from PIL import Image

from minimind_v.pipeline import VLM
from minimind_v.serve.app import create_app
from minimind_v.serve.testing import build_tiny_model

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MINIMIND_V_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
N = 24


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


def test_chat_page_upload_ask_stream_continue_clear(browser, tmp_path):
    from playwright.sync_api import expect
    vlm = VLM.load(build_tiny_model(tmp_path / "tiny-vlm"))
    img = Image.new("RGB", (64, 48), (230, 40, 40))
    img.paste((40, 90, 230), (30, 10, 56, 36))
    pic = tmp_path / "shapes.png"
    img.save(pic)
    q1, q2 = "What colour is the square?", "And the background?"
    want1 = vlm.answer(q1, images=[img], temperature=0, max_new_tokens=N)
    want2 = "".join(vlm.stream([{"role": "user", "content": "<image>\n" + q1},
                                {"role": "assistant", "content": want1},
                                {"role": "user", "content": q2}], [img], temperature=0, max_new_tokens=N))
    with LiveServer(create_app(vlm)) as srv:
        page = browser.new_page(viewport={"width": 1100, "height": 720})
        errors = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("requestfailed", lambda r: errors.append("request failed: " + r.url))
        page.goto(srv.url + "/")
        # waits through locators: wait_for_function evaluates a string in the page, which the page's own
        # Content-Security-Policy (no 'unsafe-eval', serve/guard.py) rightly refuses
        expect(page.locator("#model")).to_have_text("tiny-vlm")
        assert page.locator("#status").inner_text() == "ready"
        page.fill("#temperature", "0")
        page.fill("#max_tokens", str(N))

        page.set_input_files("#file", str(pic))
        page.wait_for_selector("#pending img")
        page.fill("#prompt", q1)
        page.click("#send")
        first = page.locator(".msg.assistant").nth(0)
        expect(first).to_have_attribute("data-finish", "length")
        assert page.locator(".msg.user img").count() == 1                       # the picture is shown
        assert int(first.get_attribute("data-chunks")) > 1                      # arrived piece by piece
        state = page.evaluate("window.chatState.messages")
        assert state[1] == {"role": "assistant", "content": want1}
        assert first.locator(".text").evaluate("e => e.textContent") == want1
        assert "completion tokens" in first.locator(".meta").inner_text()

        page.fill("#prompt", q2)
        page.press("#prompt", "Enter")
        expect(page.locator(".msg.assistant").nth(1)).to_have_attribute("data-finish", "length")
        assert page.evaluate("window.chatState.messages")[3]["content"] == want2

        out = ROOT / "test-artifacts"
        out.mkdir(exist_ok=True)
        page.screenshot(path=str(out / "serve_page.png"), full_page=True)
        assert (out / "serve_page.png").stat().st_size > 5000

        page.click("#clear")
        assert page.locator(".msg").count() == 0
        assert page.evaluate("window.chatState.messages.length") == 0
        assert not errors, errors
        page.close()
