"""`serve --web DIR`: the chat server also hands out a folder written by `export --to web`, at /web/.

The chat page then shows a "run in this browser" link: the same model, answering inside the visitor's browser
(onnxruntime-web, WebAssembly) with no request to the server after the files are loaded. The folder's
responses carry the server's Content-Security-Policy with one addition, 'wasm-unsafe-eval' in script-src:
compiling WebAssembly needs it, and nothing else of the strict policy changes (no inline script, no eval,
no other site). The folder is checked when the server starts, so a wrong path is one line, not a 404 later.
"""
from __future__ import annotations

from pathlib import Path

from fastapi.staticfiles import StaticFiles

from .guard import CSP

WEB_CSP = CSP.replace("script-src 'self'", "script-src 'self' 'wasm-unsafe-eval'")


def check_web_folder(folder: str | Path) -> Path:
    folder = Path(folder)
    for need in ("index.html", "model/minimind_v_onnx.json"):
        if not (folder / need).is_file():
            raise ValueError(f"--web {folder}: no {need}; write the folder with "
                             f"`minimind-v export --model MODEL --to web {folder}`")
    return folder


class WebFolder(StaticFiles):
    """StaticFiles whose responses allow WebAssembly to compile (see the module doc)."""

    def file_response(self, *args, **kwargs):
        response = super().file_response(*args, **kwargs)
        response.headers["content-security-policy"] = WEB_CSP
        return response
