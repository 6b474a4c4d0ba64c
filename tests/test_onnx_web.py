"""The web export in real headless Chromium (Debian's `chromium`, driven by Playwright, as test_serve_page.py):
a plain static file server (http.server) over `export --to web`, a fixed picture that the page must resize
itself, a typed question; the streamed answer's token ids must equal the PyTorch path's greedy ids
(`minimind-v chat --greedy`), and its text the chat's text. Needs npm's onnxruntime-web (fetched into the
cache by the export, or by ./run test beforehand); skipped with the reason when npm or Chromium is absent."""
from __future__ import annotations

import functools
import http.server
import json
import os
import shutil
import threading
from pathlib import Path

import pytest
import torch
from conftest import REF
from PIL import Image

pytest.importorskip("onnxruntime", reason="the ONNX tests need onnxruntime (pip install 'minimind-v[onnx]')")

from minimind_v.hf.pixels import packed_pixels  # noqa: E402
from minimind_v.model.generate import SamplingParams, generate  # noqa: E402
from minimind_v.pipeline import VLM  # noqa: E402
from minimind_v.portable.web import ORT_FILES, ORT_WEB_VERSION, export_web, npm_cache  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = os.environ.get("MINIMIND_V_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]
N = 16


@pytest.fixture(scope="module")
def browser():
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"no Chromium at {CHROMIUM} (apt-get install chromium)")
    cached = npm_cache() / f"onnxruntime-web-{ORT_WEB_VERSION}"
    if not all((cached / f).exists() for f in ORT_FILES) and shutil.which("npm") is None:
        pytest.skip("onnxruntime-web is not in the npm cache and npm is not installed")
    with sync_api.sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        yield b
        b.close()


class StaticServer:
    """`python -m http.server` in a thread: the folder on 127.0.0.1, a free port."""

    def __init__(self, folder: Path):
        handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(folder))
        handler.log_message = lambda *a, **k: None
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def __enter__(self):
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_web_page_answers_like_chat_greedy(browser, tmp_path):
    from test_onnx import demo_folder
    from playwright.sync_api import expect
    src = demo_folder(tmp_path / "demo", REF / "tokenizer")
    web = export_web(src, tmp_path / "web", log=lambda m: None)
    assert {p.name for p in (web / "ort").iterdir()} == set(ORT_FILES)
    img = Image.new("RGB", (70, 41), (230, 40, 40))           # not the model's 48 x 48: the page resizes it
    img.paste((40, 90, 230), (10, 5, 40, 30))
    img.paste((250, 250, 60), (45, 20, 66, 39))
    pic = tmp_path / "shapes.png"
    img.save(pic)
    q = "What colour is the square?"
    vlm = VLM.load(src)
    want_text = vlm.answer(q, images=[Image.open(pic)], temperature=0, max_new_tokens=N)
    ids = vlm.prompt_ids([{"role": "user", "content": q}], 1)
    pix = torch.from_numpy(packed_pixels(Image.open(pic), vlm.model.cfg.vision))[None]
    want = generate(vlm.model, [ids], SamplingParams(max_new_tokens=N, stop_ids=(vlm.tok.eos_id,)), pix)[0]
    assert len(set(want)) > 1

    with StaticServer(web) as srv:
        page = browser.new_page()
        errors, outside = [], []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.on("request", lambda r: None if r.url.startswith(srv.url) or r.url.startswith(("blob:", "data:"))
                else outside.append(r.url))
        page.goto(srv.url + "/index.html")
        expect(page.locator("#status")).to_have_text("ready", timeout=120_000)
        page.fill("#max_tokens", str(N))
        page.set_input_files("#file", str(pic))
        page.wait_for_function("() => document.querySelector('#preview').style.display === 'block'")
        page.fill("#prompt", q)
        page.click("#send")
        answer = page.locator(".msg.assistant").nth(0)
        expect(answer).to_have_attribute("data-done", "1", timeout=120_000)
        run = page.evaluate("window.webState.runs[0]")
        assert run["prompt_ids"] == len(ids)
        assert run["ids"] == want                                  # token for token
        assert answer.locator(".text").inner_text() == want_text
        assert int(answer.get_attribute("data-chunks")) > 1        # it streamed
        assert run["ttft_ms"] > 0 and run["tokens_per_s"] > 0
        assert not errors and not outside, (errors, outside)
        out = ROOT / "test-artifacts"
        out.mkdir(exist_ok=True)
        page.screenshot(path=str(out / "web_export.png"))
        (out / "web_export.json").write_text(json.dumps({"ttft_ms": run["ttft_ms"], "tokens_per_s": run["tokens_per_s"],
                                                         "tokens": len(run["ids"])}) + "\n")
