"""Test helpers that are not fixtures: a live server for the API, page and screenshot code.

    with LiveServer(create_app(VLM.load(folder))) as srv:    # uvicorn on 127.0.0.1, a free port, a thread
        openai.OpenAI(base_url=srv.url + "/v1", api_key="x") ...

Kept out of the package (tests and tools/screenshot.py use it; a user of minimind_v never does). Binding
the socket here and handing it to uvicorn means the port is ours before the server starts: no race for a
"free" port between choosing it and listening on it.
"""
from __future__ import annotations

import socket
import threading
import time


class LiveServer:
    """Run an ASGI app with uvicorn on 127.0.0.1 (a free port) in a daemon thread; stop it on exit."""

    def __init__(self, app, log_level: str = "warning", startup_timeout: float = 30.0, **timeouts):
        """`timeouts`: `header_timeout` / `keep_alive` seconds for serve/guard.uvicorn_options."""
        self.app, self.log_level, self.startup_timeout, self.timeouts = app, log_level, startup_timeout, timeouts
        self.url = None

    def __enter__(self) -> "LiveServer":
        import uvicorn
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        from minimind_v.serve.guard import uvicorn_options
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


def pixel_tensor(img, vcfg):
    """One picture -> the package's pixel tensor (P[+1], 3pp), as training rows and chat make it."""
    import torch

    from minimind_v.hf.pixels import packed_pixels
    return torch.from_numpy(packed_pixels(img, vcfg))
