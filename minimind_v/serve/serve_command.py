"""`minimind-v serve --model DIR`: the OpenAI-compatible API and the chat page on one port.

    minimind-v serve --model runs/demo/model                        http://127.0.0.1:8000/
    minimind-v serve --model DIR --host 0.0.0.0 --api-key SECRET    reachable from other machines

`cli.py` lists the command in its table and fills its parser with `add_serve_arguments`.
"""
from __future__ import annotations

import os

from ..config import DTYPES, torch_dtype
from ..flagtypes import bounded



def add_serve_arguments(p) -> None:
    """The flags of `minimind-v serve` on its (argparse) parser `p`."""
    p.description = ("Start one HTTP server (FastAPI + uvicorn) with POST /v1/chat/completions (streaming or not, "
                     "images as data URLs), GET /v1/models, GET /health, and a chat page at /. Requests are "
                     "decoded together (continuous batching).")
    p.add_argument("--model", required=True, help="model folder (config.json, model.safetensors, tokenizer)")
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (0.0.0.0: every interface)")
    p.add_argument("--port", type=bounded(int, 0, 65535), default=8000)
    p.add_argument("--name", help="model id clients must send (default: the folder name)")
    p.add_argument("--api-key", default=os.environ.get("MINIMIND_V_API_KEY"),
                   help="require 'Authorization: Bearer KEY' on /v1/* (default: $MINIMIND_V_API_KEY, else none)")
    p.add_argument("--allow-remote-images", action="store_true",
                   help="let requests name http(s):// image URLs that the server then fetches (off by default)")
    p.add_argument("--max-image-bytes", type=bounded(int, 1, 2 ** 31), default=10_000_000, help="encoded size limit per image")
    p.add_argument("--max-image-pixels", type=bounded(int, 1, 10 ** 10), default=25_000_000,
                   help="width x height limit per image, checked before decoding")
    p.add_argument("--max-images", type=bounded(int, 0, 64), default=8, help="images per request, all messages together")
    p.add_argument("--allow-origin", action="append", default=[], metavar="ORIGIN",
                   help="a web origin (e.g. https://app.example) whose pages may POST to the API from a browser; "
                        "repeat for several, '*' for any. Cross-origin browser POSTs are refused otherwise")
    p.add_argument("--request-timeout", type=bounded(float, 0.1, 3600.0), default=30.0,
                   help="seconds a client has to send a request body (408 after); a request head must arrive "
                        "within 10 s of connecting")
    p.add_argument("--max-batch", type=bounded(int, 1, 1024), default=16, help="requests decoded together")
    p.add_argument("--max-queue", type=bounded(int, 1, 100_000), default=256, help="waiting requests before 429 'busy'")
    p.add_argument("--image-cache", type=bounded(int, 0, 100_000), default=64,
                   help="keep the visual tokens of this many recent pictures, so a follow-up question about "
                        "the same picture skips the encoder (0: off)")
    p.add_argument("--max-context", type=bounded(int, 1, 1 << 20),
                   help="prompt + completion tokens per request (default: min(model limit, 2048))")
    p.add_argument("--max-tokens", type=bounded(int, 1, 1 << 20), default=512, help="completion tokens when a request names none")
    p.add_argument("--temperature", type=bounded(float, 0.0, 100.0), default=0.7, help="default when a request names none")
    p.add_argument("--top-p", type=bounded(float, 0.0, 1.0), default=0.9, help="default when a request names none")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=bounded(int, 1, 1024), help="torch CPU threads (default: torch's choice; 1 is often fastest "
                                              "for tiny models on a shared machine)")
    p.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    p.add_argument("--web", metavar="DIR",
                   help="a folder written by `export --to web` for this model: served at /web/, and the chat page "
                        "offers to run the model in the visitor's browser")
    p.add_argument("--runtime", default="torch", choices=["torch", "onnx"],
                   help="onnx: --model is a folder written by `export --to onnx`, run by onnxruntime; requests are "
                        "then served one at a time (serve/onnx_engine.py)")
    p.add_argument("--log-level", default="info", choices=["critical", "error", "warning", "info", "debug"])
    p.set_defaults(func=cmd_serve)


def cmd_serve(a) -> int:
    import torch
    import uvicorn

    from ..pipeline import VLM
    from .app import create_app
    from .guard import LOOPBACK_HOSTS, is_loopback, uvicorn_options
    from .images import ImageLimits
    from .protocol import Defaults

    if a.threads:
        torch.set_num_threads(a.threads)
    engine = None
    if a.runtime == "onnx":
        from ..portable.runtime import OnnxVLM
        from .onnx_engine import OnnxEngine, OnnxServed
        vlm = OnnxServed(OnnxVLM.load(a.model, threads=a.threads))
        engine = OnnxEngine(vlm, max_queue=a.max_queue)
    else:
        vlm = VLM.load(a.model, device=a.device, dtype=torch_dtype(a.dtype))
    # listening on loopback only: the Host header must be loopback too (refuses DNS rebinding)
    hosts = LOOPBACK_HOSTS if is_loopback(a.host) else None
    app = create_app(vlm, name=a.name, api_key=a.api_key, max_context=a.max_context, max_batch=a.max_batch,
                     max_queue=a.max_queue, image_cache=a.image_cache, allowed_hosts=hosts,
                     allow_origins=a.allow_origin, body_timeout=a.request_timeout, engine=engine, web=a.web,
                     limits=ImageLimits(max_bytes=a.max_image_bytes, max_pixels=a.max_image_pixels,
                                        max_images=a.max_images, allow_remote=a.allow_remote_images),
                     defaults=Defaults(temperature=a.temperature, top_p=a.top_p, max_tokens=a.max_tokens))
    shown = "localhost" if a.host in ("0.0.0.0", "::") else a.host
    print(f"serving model '{app.state.name}' at http://{shown}:{a.port}/  (API: /v1/chat/completions)", flush=True)
    if a.host not in ("127.0.0.1", "localhost", "::1") and not a.api_key:
        print("note: listening beyond loopback without --api-key: anyone who can reach this port can use it",
              flush=True)
    uvicorn.run(app, host=a.host, port=a.port, log_level=a.log_level, **uvicorn_options())
    return 0
