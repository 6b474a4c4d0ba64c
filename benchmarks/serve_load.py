"""Load test for `minimind-v serve`: N streaming clients on loopback for a bounded time, one JSON line out.

    python benchmarks/serve_load.py --tiny --clients 8 --duration 10          # a random tiny model
    python benchmarks/serve_load.py --model runs/demo/model --clients 16 --image
    python benchmarks/serve_load.py --url http://127.0.0.1:8000 --clients 4   # a server already running

Without --url the server is started as a subprocess (`python -m minimind_v.cli serve`), so clients
and server do not share a Python interpreter (and its GIL). Every client sends streaming requests one
after another until the time is up; requests in flight at the deadline finish and are counted.

Measured per request, from the client's side:
    ttft   time to first token: request sent -> first content delta
    itl    inter-token latency: gaps between consecutive content deltas (one delta ~ one token)
Printed (stdout, one line): requests/s, completion tokens/s, ttft and itl p50/p95 in ms, errors.
Progress and the server's log go to stderr.
"""
from __future__ import annotations

import argparse
import asyncio
import base64
import io
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

QUESTIONS = ["What colour is the circle?", "How many squares are there?", "Describe the picture.",
             "Is the triangle on the left?"]


def percentile(xs: list[float], q: float) -> float | None:
    """Nearest-rank percentile (q in 0..100) of a list; None when empty."""
    if not xs:
        return None
    s = sorted(xs)
    k = max(0, min(len(s) - 1, int(round(q / 100 * len(s) + 0.5)) - 1))
    return s[k]


def picture_url(seed: int) -> str:
    from PIL import Image
    img = Image.new("RGB", (64, 64), ((seed * 53) % 256, (seed * 97) % 256, 128))
    img.paste((250, 250, 20), (8 + seed % 20, 8, 30 + seed % 20, 30))
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(model: str, port: int, args) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "minimind_v.cli", "serve", "--model", model, "--port", str(port),
           "--log-level", "warning", "--max-batch", str(args.max_batch)]
    if args.threads:
        cmd += ["--threads", str(args.threads)]
    return subprocess.Popen(cmd, stdout=sys.stderr, stderr=sys.stderr)


def wait_healthy(url: str, proc: subprocess.Popen | None, timeout: float = 120.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise SystemExit(f"the server exited with code {proc.returncode}")
        try:
            return httpx.get(url + "/health", timeout=2).json()
        except (httpx.HTTPError, ValueError):
            time.sleep(0.2)
    raise SystemExit(f"no healthy server at {url} after {timeout:.0f} s")


async def one_request(http: httpx.AsyncClient, url: str, body: dict, stats: dict) -> None:
    t0 = time.perf_counter()
    times = []
    async with http.stream("POST", url + "/v1/chat/completions", json=body, headers=stats["headers"]) as r:
        if r.status_code != 200:
            await r.aread()
            stats["errors"] += 1
            return
        async for line in r.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            obj = json.loads(line[6:])
            if obj.get("usage"):
                stats["tokens"] += obj["usage"]["completion_tokens"]
            if obj.get("error"):
                stats["errors"] += 1
                return
            if obj.get("choices") and obj["choices"][0]["delta"].get("content"):
                times.append(time.perf_counter())
    if times:
        stats["ttft"].append(times[0] - t0)
        stats["itl"].extend(b - a for a, b in zip(times, times[1:]))
    stats["requests"] += 1


async def client(i: int, url: str, model: str, args, deadline: float, stats: dict) -> None:
    async with httpx.AsyncClient(timeout=httpx.Timeout(120.0)) as http:
        k = 0
        while time.perf_counter() < deadline:
            q = QUESTIONS[(i + k) % len(QUESTIONS)]
            content = [{"type": "image_url", "image_url": {"url": stats["pictures"][(i + k) % 4]}},
                       {"type": "text", "text": q}] if args.image else q
            body = {"model": model, "messages": [{"role": "user", "content": content}], "stream": True,
                    "stream_options": {"include_usage": True}, "max_tokens": args.max_tokens,
                    "temperature": 0}
            try:
                await one_request(http, url, body, stats)
            except httpx.HTTPError as e:
                stats["errors"] += 1
                print(f"client {i}: {type(e).__name__}: {e}", file=sys.stderr)
            k += 1


async def run_load(url: str, model: str, args) -> dict:
    stats = {"requests": 0, "errors": 0, "tokens": 0, "ttft": [], "itl": [],
             "headers": {"Authorization": f"Bearer {args.api_key}"} if args.api_key else {},
             "pictures": [picture_url(s) for s in range(4)] if args.image else []}
    t0 = time.perf_counter()
    deadline = t0 + args.duration
    await asyncio.wait_for(asyncio.gather(*(client(i, url, model, args, deadline, stats)
                                            for i in range(args.clients))), args.duration + 300)
    stats["wall"] = time.perf_counter() - t0
    return stats


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    src = ap.add_mutually_exclusive_group(required=True)
    src.add_argument("--model", help="model folder to serve")
    src.add_argument("--tiny", action="store_true", help="serve a random tiny model built in a temp folder")
    src.add_argument("--url", help="benchmark a server that is already running")
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds during which new requests start")
    ap.add_argument("--max-tokens", type=int, default=32)
    ap.add_argument("--image", action="store_true", help="send a picture with every request")
    ap.add_argument("--max-batch", type=int, default=16, help="server's --max-batch (when started here)")
    ap.add_argument("--threads", type=int, help="server's --threads (when started here)")
    ap.add_argument("--api-key", default=os.environ.get("MINIMIND_V_API_KEY"))
    args = ap.parse_args(argv)

    proc, tmp = None, None
    url = args.url.rstrip("/") if args.url else None
    try:
        if url is None:
            model = args.model
            if args.tiny:
                from minimind_v.serve.testing import build_tiny_model
                tmp = tempfile.TemporaryDirectory()
                model = str(build_tiny_model(Path(tmp.name) / "tiny-vlm"))
            url = f"http://127.0.0.1:{free_port()}"
            proc = start_server(model, int(url.rsplit(":", 1)[1]), args)
        health = wait_healthy(url, proc)
        print(f"benchmarking {health['model']} at {url} with {args.clients} clients for {args.duration} s",
              file=sys.stderr)
        s = asyncio.run(run_load(url, health["model"], args))
        after = httpx.get(url + "/health", timeout=5).json()
    finally:
        if proc is not None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        if tmp is not None:
            tmp.cleanup()
    ms = lambda v: None if v is None else round(v * 1000, 2)  # noqa: E731
    print(json.dumps({
        "benchmark": "serve_load", "model": health["model"], "clients": args.clients,
        "duration_s": round(s["wall"], 2), "max_tokens": args.max_tokens, "image": args.image,
        "requests": s["requests"], "errors": s["errors"],
        "requests_per_s": round(s["requests"] / s["wall"], 3),
        "completion_tokens_per_s": round(s["tokens"] / s["wall"], 1),
        "ttft_ms_p50": ms(percentile(s["ttft"], 50)), "ttft_ms_p95": ms(percentile(s["ttft"], 95)),
        "itl_ms_p50": ms(percentile(s["itl"], 50)), "itl_ms_p95": ms(percentile(s["itl"], 95)),
        "server_peak_batch": after.get("peak_batch"), "server_max_batch": after.get("max_batch"),
    }), flush=True)
    return 0 if s["errors"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
