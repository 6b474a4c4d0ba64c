"""ONNX Runtime against our PyTorch path, batch 1 on the CPU: decode tokens/s and time to first token, in one
run, side by side, on the same prompt, picture and thread count.

    python benchmarks/onnx_decode.py --out benchmarks/results/cpu-onnx.jsonl     # full size, 768 x 8, fp32
    python benchmarks/onnx_decode.py --preset tiny --tokens 20 --repeats 1        # a quick correctness run

Random weights (speed does not depend on them) with a random encoder of the preset's shape (SigLIP2 B/16 for
minimind-3v); the model folder and its ONNX export (`minimind-v export --to onnx`, fp32) are written to a
temporary folder first (the export time is reported). Greedy decoding with no stop token, so both sides
decode exactly --tokens tokens, and the tokens must agree (the run fails otherwise).

  torch   minimind_v.model.generate.generate_stream (preallocated KV cache, SDPA) after
          hf/pixels.pixel_batch: what `minimind-v chat` runs
  onnx    minimind_v.portable.runtime.OnnxVLM: hf/pixels.encoder_inputs -> vision.onnx, then decoder.onnx with
          the cache it returns, on onnxruntime's CPU provider: what `chat --runtime onnx` runs

Each repeat runs both, alternating which goes first, so the load of a shared machine hits them alike;
medians over --repeats. Fields (one JSON line): torch_* / onnx_* ttft_s (picture preprocessing, encoder,
prefill and the first token), decode_tokens_per_s (tokens after the first, per second), and
decode_speedup_ratio = onnx tokens/s / torch tokens/s (above 1: onnxruntime decodes faster),
ttft_ratio = onnx ttft / torch ttft (below 1: onnxruntime answers sooner); date, versions, machine.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # as benchmarks/generate.py: no spinning on a shared CPU

import argparse  # noqa: E402
import datetime  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402
from generate import make_prompt  # noqa: E402
from PIL import Image  # noqa: E402
from train_throughput import emit, load_tokenizer, machine_info, model_vocab, random_image, text_pieces  # noqa: E402

from minimind_v.config import preset  # noqa: E402
from minimind_v.formats.folder import save_model  # noqa: E402
from minimind_v.hf.pixels import pixel_batch  # noqa: E402
from minimind_v.model import generate as gen  # noqa: E402
from minimind_v.model.vlm import MiniMindVLM  # noqa: E402


def run_torch(model, ids, image, n_tokens):
    params = gen.SamplingParams(max_new_tokens=n_tokens, temperature=0.0)
    t0 = time.perf_counter()
    pv = torch.from_numpy(pixel_batch([image], model.cfg.vision))
    stream = gen.generate_stream(model, [ids], params, pixel_values=pv)
    out = [int(next(stream)[0])]
    t1 = time.perf_counter()
    for nxt in stream:
        out.append(int(nxt[0]))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def run_onnx(rt, ids, image, n_tokens):
    params = rt.params(max_new_tokens=n_tokens, temperature=0.0)
    t0 = time.perf_counter()
    visual = rt.encode(rt.pixel_inputs([image]))          # no visual-token cache: every run encodes
    stream = rt.generate_stream([ids], params, visual)
    out = [int(next(stream)[0])]
    t1 = time.perf_counter()
    for nxt in stream:
        out.append(int(nxt[0]))
    t2 = time.perf_counter()
    return t1 - t0, t2 - t1, out


def versions() -> dict:
    import onnx
    import onnxruntime
    return {"torch": torch.__version__, "onnxruntime": onnxruntime.__version__, "onnx": onnx.__version__,
            "numpy": np.__version__, "python": platform.python_version()}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="onnxruntime vs PyTorch: decode tokens/s and time to first token at "
                                            "batch 1 on the CPU (one JSON line).")
    p.add_argument("--preset", default="minimind-3v", help="model shape (tiny: a quick correctness run)")
    p.add_argument("--tokens", type=int, default=100, help="tokens to generate")
    p.add_argument("--prompt-tokens", type=int, default=97, help="prompt length, the image's tokens included")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2, help="CPU threads for both (torch and onnxruntime)")
    p.add_argument("--tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also append the JSON line to this file")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    from minimind_v.portable.onnx_export import export_onnx
    from minimind_v.portable.runtime import OnnxVLM
    tok = load_tokenizer(args.tokenizer)
    torch.manual_seed(args.seed)
    cfg = preset(args.preset, vocab_size=model_vocab(tok), image_token_id=tok.image_id, pad_token_id=tok.pad_id,
                 bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    model = MiniMindVLM(cfg).eval()
    rng = random.Random(args.seed)
    ids = make_prompt(tok, rng, text_pieces(tok), args.prompt_tokens, cfg.image_token_len)
    image = Image.open(io.BytesIO(random_image(rng))).convert("RGB")
    with tempfile.TemporaryDirectory() as tmp:
        save_model(model, Path(tmp) / "model", tok)
        t = time.perf_counter()
        export_onnx(Path(tmp) / "model", Path(tmp) / "onnx", log=lambda m: print(m, file=sys.stderr))
        export_s = time.perf_counter() - t
        onnx_mb = sum(f.stat().st_size for f in (Path(tmp) / "onnx").glob("*.onnx")) / 1e6
        rt = OnnxVLM.load(Path(tmp) / "onnx", threads=args.threads)
        with torch.inference_mode():
            run_torch(model, ids, image, 4)                        # warm-up
            run_onnx(rt, ids, image, 4)
            runs = {"torch": [], "onnx": []}
            for r in range(args.repeats):
                order = ("torch", "onnx") if r % 2 == 0 else ("onnx", "torch")
                for side in order:
                    runs[side].append(run_torch(model, ids, image, args.tokens) if side == "torch"
                                      else run_onnx(rt, ids, image, args.tokens))
    if runs["torch"][0][2] != runs["onnx"][0][2]:
        raise SystemExit("onnxruntime and PyTorch decoded different tokens: the export is wrong, not slow")
    steps = args.tokens - 1
    res = {"benchmark": "onnx_decode", "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
           "preset": args.preset, "batch_size": 1, "prompt_tokens": len(ids), "new_tokens": args.tokens,
           "repeats": args.repeats, "threads": args.threads, "dtype": "fp32", "export_s": round(export_s, 1),
           "onnx_mb": round(onnx_mb, 1)}
    for side, rs in runs.items():
        res[f"{side}_ttft_s"] = round(statistics.median(r[0] for r in rs), 4)
        res[f"{side}_decode_tokens_per_s"] = round(steps / statistics.median(r[1] for r in rs), 2)
        res[f"{side}_decode_tokens_per_s_range"] = [round(steps / max(r[1] for r in rs), 2),
                                                   round(steps / min(r[1] for r in rs), 2)]
    res["decode_speedup_ratio"] = round(res["onnx_decode_tokens_per_s"] / res["torch_decode_tokens_per_s"], 3)
    res["ttft_ratio"] = round(res["onnx_ttft_s"] / res["torch_ttft_s"], 3)
    res["versions"] = versions()
    res["machine"] = machine_info(torch.device("cpu"))
    emit(json.dumps(res), args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
