"""Helpers for trying the server without a trained model: a tiny random model folder and a live server.

    folder = build_tiny_model(tmp_path / "tiny")             # tokenizer + random tiny VLM, seconds on a CPU
    with LiveServer(create_app(VLM.load(folder))) as srv:    # uvicorn on 127.0.0.1, a free port, a thread
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x") ...

Used by the tests and by `benchmarks/serve_load.py --tiny`. The random model's decoder weights are drawn
with std 0.3 instead of the training init's 0.02, so that its greedy answer clearly depends on the prompt
and the picture (with 0.02 it repeats one token whatever it is shown), which makes "the server answers
exactly what the model answers" a test that can fail.
"""
from __future__ import annotations

import socket
import threading
import time
from pathlib import Path

CORPUS = ["What colour is the circle? The circle is red.", "How many squares are there? There are two squares.",
          "Is the triangle on the left? Yes, the triangle is on the left.", "Describe the picture briefly.",
          "A blue square and a green circle on a white background."]


def build_tiny_model(out: str | Path, seed: int = 0, std: float = 0.3, vocab_size: int = 300) -> Path:
    """Write a model folder (tokenizer + random `tiny` preset) and return its path."""
    import torch

    from ..config import preset
    from ..model.folder import save_model
    from ..model.vlm import MiniMindVLM
    from ..tokenizer import train_tokenizer
    out = Path(out)
    tok = train_tokenizer(CORPUS * 20, vocab_size=vocab_size, out=out, show_progress=False)
    torch.manual_seed(seed)
    model = MiniMindVLM(preset("tiny", vocab_size=tok.vocab_size, image_token_id=tok.image_id))
    model.reset_parameters(std=std)
    save_model(model, out, tok)
    return out


class LiveServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 (a free port) in a daemon thread; stop it on exit."""

    def __init__(self, app, log_level: str = "warning", startup_timeout: float = 30.0, **timeouts):
        """`timeouts`: `header_timeout` / `keep_alive` seconds for guard.uvicorn_options."""
        self.app, self.log_level, self.startup_timeout, self.timeouts = app, log_level, startup_timeout, timeouts
        self.url = None

    def __enter__(self) -> "LiveServer":
        import uvicorn
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from .guard import uvicorn_options
        self.server = uvicorn.Server(uvicorn.Config(self.app, log_level=self.log_level, lifespan="on",
                                                    **uvicorn_options(**self.timeouts)))
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True,
                                       name="uvicorn-test-server")
        self.thread.start()
        deadline = time.monotonic() + self.startup_timeout
        while not self.server.started:
            if not self.thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        return self

    def __exit__(self, *exc) -> None:
        self.server.should_exit = True
        self.thread.join(15)
