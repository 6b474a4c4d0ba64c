"""Serving: an OpenAI-compatible vision chat API and a small web chat page, in one FastAPI app.

    errors.py     the OpenAI error JSON shape and the exception that carries a 4xx status
    images.py     image parts -> PIL images: data URLs only by default; byte and pixel limits are
                  checked before any pixel is decoded
    protocol.py   request validation (every field, every type) and the response / chunk objects
    engine.py     continuous batching: one decode thread steps every active request together
    app.py        `create_app(vlm, ...)`: routes, auth, streaming, disconnects
    serve_command.py  the `minimind-v serve` command
    static/       the chat page (plain HTML + JS + CSS, no build step, no CDN)

`minimind-v serve --model DIR` is the entry point; `create_app` is the Python one.
"""
from __future__ import annotations


def create_app(*args, **kwargs):
    """Lazy import so `import minimind_v.serve` does not need FastAPI installed."""
    from .app import create_app as _create_app
    return _create_app(*args, **kwargs)
