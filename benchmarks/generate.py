"""Generation speed of the full-size MiniMind-V: time to first token with one image, decode tokens/s at
batch 1 and at batch 8; ours against a KV cache that grows by torch.cat per token (the original's way).

    python benchmarks/generate.py                                  # dense, fp32 on CPU
    python benchmarks/generate.py --preset minimind-3v minimind-3v-moe --tokens 100
    python benchmarks/generate.py --device cuda --dtype bf16       # on a GPU

Random weights (speed does not depend on them), a random encoder of the SigLIP2 B/16 shape, greedy
decoding with no stop token so every run decodes exactly --tokens tokens. The prompt is one image plus
text, --prompt-tokens long in total (64 of them the image's placeholders); batch 8 uses eight such
prompts of slightly different lengths (left-padded) with eight different images.

Modes:
  ours      minimind_v.model.generate.generate_stream: preallocated KV cache written in place, image
            encoded once in the prefill, one token per row per step
  concat    the same loop with the cache swapped for one that concatenates every new key/value onto
            the old ones (what the original does), to show what preallocation is worth on its own

Fields (one JSON line per preset x mode x batch): ttft_s (median of --repeats: preprocessing the image,
encoder, prefill and the first token), ttft_encoder_s (the encoder part), decode_tokens_per_s (tokens
of all rows per second after the first), decode_ms_per_step, decode_cpu_ms_per_step (process CPU time,
CPU only: steadier than wall time on a shared machine), prompt_tokens, batch_size.
"""
from __future__ import annotations

import os

# Threads that wait at the end of a parallel region sleep instead of spinning (libgomp's default spins).
# On a shared, oversubscribed CPU the spinning thread steals the core its partner needs: measured 5-10x
# slower steps there (docs/perf.md). Set before torch loads OpenMP; OMP_WAIT_POLICY=ACTIVE overrides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import json  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402


from minimind_v.config import preset  # noqa: E402
from minimind_v.data.chatml import render  # noqa: E402
from minimind_v.model import generate as gen  # noqa: E402
from minimind_v.hf.pixels import pixel_batch  # noqa: E402
from minimind_v.model.vlm import MiniMindVLM  # noqa: E402
from train_throughput import (cpu_seconds, emit, load_tokenizer, machine_info, model_vocab, random_image,  # noqa: E402
                              random_text, setup_device, text_pieces)


class ConcatKVCache:
    """The original's cache: keys/values of each layer grow by torch.cat at every step."""

    def __init__(self, cfg, batch, max_len, device, dtype):
        self.k = [None] * cfg.num_hidden_layers
        self.v = [None] * cfg.num_hidden_layers
        self.pos = 0

    def write(self, layer, k, v):
        if self.k[layer] is not None:
            k = torch.cat([self.k[layer], k], 2)
            v = torch.cat([self.v[layer], v], 2)
        self.k[layer], self.v[layer] = k, v
        return k, v


def make_prompt(tok, rng, pieces, n_tokens: int, image_len: int) -> list[int]:
    """Rendered chat ids (one image + text + the assistant header), as close to n_tokens as text allows."""
    best = None
    for n in range(1, n_tokens):
        msgs = [{"role": "user", "content": "<image>\n" + random_text(random.Random(rng.random()), pieces, n)}]
        ids = render(msgs, tok, image_len, add_generation_prompt=True).ids
        if best is None or abs(len(ids) - n_tokens) < abs(len(best) - n_tokens):
            best = ids
        if len(ids) >= n_tokens:
            break
    return best


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_once(model, prompts, images, n_tokens, device):
    """(seconds to the first token, seconds of the encoder in it, seconds for the remaining tokens,
    process CPU seconds for the remaining tokens)."""
    params = gen.SamplingParams(max_new_tokens=n_tokens, temperature=0.0)
    enc_time = []

    def stamp(*_):                  # returns None: the hooks must not replace the encoder's output
        sync(device)
        enc_time.append(time.perf_counter())

    hook = model.vision_encoder.register_forward_pre_hook(stamp)
    hook2 = model.vision_encoder.register_forward_hook(stamp)
    sync(device)
    t0 = time.perf_counter()
    pv = torch.from_numpy(pixel_batch(images, model.cfg.vision)).to(device)
    stream = gen.generate_stream(model, prompts, params, pixel_values=pv)
    first = next(stream)
    first.tolist()
    t1, c1 = time.perf_counter(), cpu_seconds()
    n = 1
    for nxt in stream:
        nxt.tolist()          # what a streaming server does with every token
        n += 1
    t2, c2 = time.perf_counter(), cpu_seconds()
    hook.remove()
    hook2.remove()
    if n != n_tokens:
        raise RuntimeError(f"decoded {n} tokens, expected {n_tokens}")
    return t1 - t0, enc_time[1] - enc_time[0], t2 - t1, c2 - c1


def run_mode(model, mode, prompts, images, n_tokens, device):
    """run_once with the KV cache of `mode` (ours: preallocated; concat: grown by torch.cat)."""
    original_cache = gen.KVCache
    if mode == "concat":
        gen.KVCache = ConcatKVCache
    try:
        return run_once(model, prompts, images, n_tokens, device)
    finally:
        gen.KVCache = original_cache


def bench(model, tok, modes, batch, args, device, rng, pieces) -> list[dict]:
    """Every mode on the same prompts and images, interleaved repeat by repeat (a shared machine's load
    then hits the modes alike); one result per mode, medians over the repeats."""
    import io

    from PIL import Image
    prompts = [make_prompt(tok, rng, pieces, args.prompt_tokens + (0 if batch == 1 else rng.randint(-6, 6)),
                           model.cfg.image_token_len) for _ in range(batch)]
    images = [Image.open(io.BytesIO(random_image(rng))).convert("RGB") for _ in range(batch)]
    runs = {m: [] for m in modes}
    for m in modes:
        run_mode(model, m, prompts, images, 4, device)                 # warm-up
    for _ in range(args.repeats):
        for m in modes:
            runs[m].append(run_mode(model, m, prompts, images, args.tokens, device))
    steps = args.tokens - 1
    out = []
    for m in modes:
        rs = runs[m]
        dec = statistics.median(r[2] for r in rs)
        dec_cpu = statistics.median(r[3] for r in rs)
        out.append({"mode": m, "batch_size": batch, "prompt_tokens": len(prompts[0]), "new_tokens": args.tokens,
                    "ttft_s": round(statistics.median(r[0] for r in rs), 4),
                    "ttft_encoder_s": round(statistics.median(r[1] for r in rs), 4),
                    "decode_tokens_per_s": round(batch * steps / dec, 2),
                    "decode_ms_per_step": round(1000 * dec / steps, 2),
                    "decode_cpu_ms_per_step": round(1000 * dec_cpu / steps, 2) if device.type == "cpu" else None,
                    "decode_tokens_per_s_range": [round(batch * steps / max(r[2] for r in rs), 2),
                                                  round(batch * steps / min(r[2] for r in rs), 2)],
                    "repeats": len(rs)})
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Time to first token and decode tokens/s of the full-size model "
                                            "(one JSON line per preset x mode x batch size).")
    p.add_argument("--preset", nargs="+", default=["minimind-3v"])
    p.add_argument("--modes", nargs="+", default=["ours", "concat"], choices=["ours", "concat"])
    p.add_argument("--batch-size", nargs="+", type=int, default=[1, 8])
    p.add_argument("--tokens", type=int, default=100, help="tokens to generate per row")
    p.add_argument("--prompt-tokens", type=int, default=97, help="prompt length, the image's 64 tokens included")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per configuration (median reported)")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--tokenizer")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also append the JSON lines to this file")
    args = p.parse_args(argv)
    device, dtype = setup_device(args)
    tok = load_tokenizer(args.tokenizer)
    pieces = text_pieces(tok)
    info = machine_info(device)
    for name in args.preset:
        torch.manual_seed(args.seed)
        cfg = preset(name, vocab_size=model_vocab(tok), image_token_id=tok.image_id, pad_token_id=tok.pad_id,
                     bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
        model = MiniMindVLM(cfg).to(device=device, dtype=dtype).eval()
        for b in args.batch_size:
            for r in bench(model, tok, args.modes, b, args, device, random.Random(args.seed), pieces):
                r.update(preset=name, dtype=str(dtype).replace("torch.", ""), device=str(device),
                         threads=torch.get_num_threads() if device.type == "cpu" else None, machine=info)
                line = json.dumps(r)
                emit(line, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
