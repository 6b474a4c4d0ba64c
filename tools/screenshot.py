"""Take a screenshot of the chat page answering a question about a picture (for the README).

    python tools/screenshot.py --model runs/demo/sft/model --image runs/demo/example.png \\
        --question "What colour is the circle?" --out docs/serve_page.png

Serves the model on a free loopback port, drives headless Chromium (Debian's `chromium` through
Playwright, no browser download) through the page: pick the picture, ask, wait for the streamed
answer, ask the follow-ups, save the PNG. Needs `pip install playwright` and `apt-get install chromium`.

A tool for the repository, not part of the package: it runs from a clone (`./run setup` installs
minimind_v) and serves through the tests' `LiveServer` (tests/helpers.py), loaded from its file so that
neither copy of the server code nor a sys.path edit is needed.
"""
from __future__ import annotations

import argparse
import importlib.util
import re
import shutil
from pathlib import Path

HELPERS = Path(__file__).resolve().parents[1] / "tests" / "helpers.py"

ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def live_server_class():
    """`LiveServer` from tests/helpers.py, imported by file path (tests/ is not a package on the path)."""
    spec = importlib.util.spec_from_file_location("minimind_v_test_helpers", HELPERS)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.LiveServer


def take(model: str, image: str, questions: list[str], out: str, chromium: str, max_tokens: int = 48,
         name: str | None = None) -> Path:
    from playwright.sync_api import expect, sync_playwright

    from minimind_v.pipeline import VLM
    from minimind_v.serve.app import create_app

    LiveServer = live_server_class()

    vlm = VLM.load(model)
    with LiveServer(create_app(vlm, name=name)) as srv, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=ARGS, headless=True)
        page = browser.new_page(viewport={"width": 1100, "height": 640})
        page.goto(srv.url + "/")
        expect(page.locator("#status")).to_have_text("ready")       # locators: the page's CSP refuses eval
        page.fill("#temperature", "0")
        page.fill("#max_tokens", str(max_tokens))
        page.set_input_files("#file", image)
        for i, q in enumerate(questions):
            page.fill("#prompt", q)
            page.click("#send")
            expect(page.locator(".msg.assistant").nth(i)).to_have_attribute("data-finish", re.compile(".+"),
                                                                            timeout=60_000)
        Path(out).parent.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=out)
        browser.close()
    return Path(out)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--image", required=True)
    ap.add_argument("--question", action="append", required=True, help="repeat for a multi-turn screenshot")
    ap.add_argument("--out", default="docs/serve_page.png")
    ap.add_argument("--name", help="model id shown on the page (default: the folder name)")
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--chromium", default=shutil.which("chromium") or "/usr/bin/chromium")
    a = ap.parse_args(argv)
    print(take(a.model, a.image, a.question, a.out, a.chromium, a.max_tokens, a.name))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
