"""A model answering inside Chromium: time to first token and tokens/s as the page measures them (one JSON line).

    minimind-v demo --out runs/demo
    python benchmarks/onnx_browser.py --model runs/demo/sft/model --data runs/demo/heldout/eval.parquet \\
        --out benchmarks/results/cpu-onnx-browser.jsonl

The model folder is exported with `export --to web` (fp32, or --quantize int8) into a temporary folder and
served by a plain static file server (http.server) on 127.0.0.1; headless Chromium (Debian's `chromium`,
driven by Playwright) opens the page, and for each of the first --n held-out rows picks its picture, types its
question and waits for the greedy answer. The page's own numbers are read back (window.webState.runs): time to
first token (picture read, encoder, prefill, first token) and decode tokens/s (tokens after the first). Each
question is asked on a fresh page load, so every answer starts from a new conversation; the first is a warm-up.
Fields: median and range of both, n, tokens per answer, onnxruntime-web and Chromium versions, machine.
"""
from __future__ import annotations

import argparse
import datetime
import functools
import http.server
import io
import json
import os
import shutil
import statistics
import sys
import tempfile
import threading
from pathlib import Path

from onnx_decode import versions
from train_throughput import emit, machine_info

from minimind_v.data.chatml import parse_conversations
from minimind_v.eval.evaluate import load_eval_rows
from minimind_v.portable.web import ORT_WEB_VERSION, export_web

CHROMIUM = os.environ.get("MINIMIND_V_CHROMIUM") or shutil.which("chromium") or "/usr/bin/chromium"


def serve(folder: Path):
    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Quiet, directory=str(folder)))
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    return httpd, f"http://127.0.0.1:{httpd.server_address[1]}/index.html"


def question(row) -> str:
    msgs = parse_conversations(row["conversations"])
    return next(m["content"] for m in reversed(msgs) if m["role"] == "user").replace("<image>", "").strip()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Time to first token and tokens/s of a model in Chromium (web export).")
    p.add_argument("--model", required=True)
    p.add_argument("--data", required=True, help="eval parquet: pictures and questions (the demo's heldout/eval.parquet)")
    p.add_argument("--n", type=int, default=20, help="questions asked (the first is a warm-up)")
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--quantize", choices=["int8"])
    p.add_argument("--out")
    a = p.parse_args(argv)
    from playwright.sync_api import sync_playwright
    rows = load_eval_rows([a.data], a.n)
    runs = []
    with tempfile.TemporaryDirectory() as tmp, sync_playwright() as pw:
        web = export_web(a.model, Path(tmp) / "web", quantize=a.quantize, log=lambda m: print(m, file=sys.stderr))
        httpd, url = serve(web)
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True,
                                     args=["--headless", "--no-sandbox", "--disable-gpu", "--no-first-run"])
        for i, row in enumerate(rows):
            pic = Path(tmp) / f"{i}.png"
            images = row.get("image_bytes")
            raw = images[0] if isinstance(images, list) else images
            from PIL import Image
            Image.open(io.BytesIO(raw)).save(pic)
            page = browser.new_page()
            page.goto(url)
            page.wait_for_function("() => window.webState.ready", timeout=300_000)
            page.fill("#max_tokens", str(a.max_new_tokens))
            page.set_input_files("#file", str(pic))
            page.wait_for_function("() => document.querySelector('#preview').style.display === 'block'")
            page.fill("#prompt", question(row))
            page.click("#send")
            page.wait_for_selector(".msg.assistant[data-done='1']", timeout=300_000)
            run = page.evaluate("window.webState.runs[0]")
            page.close()
            if i:                                   # the first answer warms the page's caches up
                runs.append(run)
        chromium = browser.version
        browser.close()
        httpd.shutdown()
    ttft = [r["ttft_ms"] for r in runs]
    rate = [r["tokens_per_s"] for r in runs if r["tokens_per_s"] > 0]
    res = {"benchmark": "onnx_browser", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "model": a.model, "quantize": a.quantize, "n": len(runs),
           "ttft_ms": round(statistics.median(ttft), 1), "ttft_ms_range": [round(min(ttft), 1), round(max(ttft), 1)],
           "tokens_per_s": round(statistics.median(rate), 1) if rate else None,
           "tokens_per_s_range": [round(min(rate), 1), round(max(rate), 1)] if rate else None,
           "tokens_per_answer": round(statistics.mean(len(r["ids"]) for r in runs), 1),
           "threads": 1, "onnxruntime_web": ORT_WEB_VERSION, "chromium": chromium,
           "versions": versions(), "machine": machine_info(__import__("torch").device("cpu"))}
    emit(json.dumps(res), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
