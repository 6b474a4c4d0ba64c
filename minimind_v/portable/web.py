"""`minimind-v export --to web OUT`: a static folder in which a web browser runs the model, no server code.

    OUT/index.html  style.css  app.mjs  tokenizer.mjs  pixels.mjs   the page (static/ in this package)
    OUT/model/                                             the ONNX folder (onnx_export), fp32 or int8
    OUT/ort/ort.wasm.min.mjs, ort-wasm-simd-threaded.{mjs,wasm}   onnxruntime-web's WebAssembly build

Serve it with any static file server (`python -m http.server -d OUT`) and open it: pick a picture, type a
question, the answer streams in. Nothing is loaded from another site: onnxruntime-web's files come from its
npm package at a pinned version (ORT_WEB_VERSION), fetched once with the npm client into a cache
(~/.cache/minimind-v/npm, or $MINIMIND_V_NPM_CACHE) and copied from there. The three files are the
WebAssembly-only ESM build and its runtime pair: the page asks for one thread, so it runs without the
cross-origin isolation headers a plain static server does not send.

The page does in JavaScript what the torch-free runtime does in Python: ChatML rendering and byte-level
BPE (tokenizer.mjs, reading the folder's tokenizer.json; the same ids), PIL's resampling on 8-bit pixels
with its fixed-point weights (pixels.mjs; bit-equal to Pillow for opaque RGB pictures), the decoder loop
with the KV cache, greedy or sampled, and UTF-8-safe streaming.
"""
from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from .. import npm
from .onnx_export import ExportError, export_onnx

ORT_WEB_VERSION = "1.31.1"
ORT_FILES = ("ort.wasm.min.mjs", "ort-wasm-simd-threaded.mjs", "ort-wasm-simd-threaded.wasm")
STATIC = Path(__file__).with_name("static")
PAGE_FILES = ("index.html", "style.css", "app.mjs", "tokenizer.mjs", "pixels.mjs")


def npm_cache() -> Path:
    return npm.cache_dir()


def ort_web_files(version: str = ORT_WEB_VERSION, log=print) -> Path:
    """The folder holding onnxruntime-web's files at `version`, fetched with `npm pack` on first use."""
    cache = npm_cache()
    out = cache / f"onnxruntime-web-{version}"
    if all((out / f).exists() for f in ORT_FILES):
        return out
    tgz = cache / f"onnxruntime-web-{version}.tgz"
    if not tgz.exists():
        if shutil.which("npm") is None:
            raise ExportError(f"--to web needs onnxruntime-web {version} from npm, and npm is not installed: install "
                              f"Node.js with npm (e.g. apt-get install npm), or put onnxruntime-web-{version}.tgz in "
                              f"{cache}")
        log(f"fetching onnxruntime-web {version} with npm into {cache}")
        try:
            tgz = npm.pack(f"onnxruntime-web@{version}", cache)
        except npm.NpmError as e:
            raise ExportError(str(e)) from None
    stage = cache / f".onnxruntime-web-{version}.partial"
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir(parents=True)
    with tarfile.open(tgz) as tar:
        for name in ORT_FILES:
            member = tar.getmember(f"package/dist/{name}")
            src = tar.extractfile(member)
            if src is None:
                raise ExportError(f"{tgz} has no regular file package/dist/{name}")
            (stage / name).write_bytes(src.read())
    shutil.rmtree(out, ignore_errors=True)
    stage.rename(out)
    return out


def export_web(src, dst, dtype: str = "fp32", quantize: str | None = None, exporter: str = "torchscript",
               overwrite: bool = False, log=print) -> Path:
    """Model folder -> a static web folder (see the module doc)."""
    if dtype != "fp32":
        raise ExportError("--to web writes fp32 graphs (onnxruntime-web's CPU build has no fp16 kernels for "
                          "them); use --quantize int8 for a smaller download")
    from ..formats.adapter import base_chain
    from ..outputs import check_output, staged_output
    dst = Path(dst)
    inputs = [Path(src), *base_chain(src)]
    check_output(dst, inputs, overwrite=overwrite, folder=True)
    ort_dir = ort_web_files(log=log)               # before the long export: a missing npm fails fast
    with staged_output(dst, inputs, overwrite=overwrite, folder=True) as stage:
        export_onnx(src, stage / "model", dtype=dtype, quantize=quantize, exporter=exporter, log=log)
        for name in PAGE_FILES:
            shutil.copy(STATIC / name, stage / name)
        (stage / "ort").mkdir()
        for name in ORT_FILES:
            shutil.copy(ort_dir / name, stage / "ort" / name)
    log(f"web folder written to {dst}: serve it with `python -m http.server -d {dst}` and open the page")
    return dst
