"""What a new sequence length costs in attention: SDPA forward + backward at the full model's head shape.

    python benchmarks/attention_shapes.py --device cuda          # on a GPU: torch's default order vs no cuDNN
    python benchmarks/attention_shapes.py --lengths 5            # a quick look on the CPU

Packed or pad-to-longest batches give the attention a new (batch, length) nearly every step. Some kernels
prepare per shape (cuDNN's SDPA builds an execution plan, which recent torch tries first on Hopper), so the
first call at a length can cost far more than the next one at the same length. For each backend choice
this times, over distinct lengths, the first forward + backward at each length and a second one at the
same length, for a causal call and for a boolean (packing) mask. One JSON line per (backends, mask):
first_ms (mean first call), repeat_ms (mean second call), first_max_ms.
"""
from __future__ import annotations

import argparse
import json
import random
import time

import torch
import torch.nn.functional as F
from torch.nn.attention import sdpa_kernel
from train_throughput import emit      # benchmarks/ is on the path of a script run from it

from minimind_v.model.llm import NO_CUDNN

CHOICES = {
    "default": None,      # torch's own order
    "no-cudnn": NO_CUDNN,  # what the model uses on CUDA (model/llm.py sdpa_backends)
}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def call(q, k, v, mask, backends):
    def run():
        if mask is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
        out.sum().backward()
    if backends is None:
        run()
    else:
        with sdpa_kernel(backends):
            run()


def timed(device, *args) -> float:
    sync(device)
    t0 = time.perf_counter()
    call(*args)
    sync(device)
    return (time.perf_counter() - t0) * 1000


def measure(device, dtype, name, masked, lengths, batch, heads, head_dim) -> dict:
    first, repeat = [], []
    for t in lengths:
        q, k, v = (torch.randn(batch, heads, t, head_dim, device=device, dtype=dtype, requires_grad=True)
                   for _ in range(3))
        mask = None
        if masked:   # two packed rows per sequence: block-diagonal causal
            seg = (torch.arange(t, device=device) >= t // 2).long()
            causal = torch.ones(t, t, dtype=torch.bool, device=device).tril()
            mask = (causal & (seg[:, None] == seg[None, :]))[None, None]
        first.append(timed(device, q, k, v, mask, CHOICES[name]))
        repeat.append(timed(device, q, k, v, mask, CHOICES[name]))
    return {"backends": name, "mask": "block-diagonal" if masked else "causal", "lengths": len(lengths),
            "batch": batch, "heads": heads, "head_dim": head_dim, "dtype": str(dtype).replace("torch.", ""),
            "first_ms": round(sum(first) / len(first), 2), "first_max_ms": round(max(first), 2),
            "repeat_ms": round(sum(repeat) / len(repeat), 2), "device": torch.cuda.get_device_name()
            if device.type == "cuda" else "cpu", "torch": torch.__version__}


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--lengths", type=int, default=12, help="distinct sequence lengths to try")
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--heads", type=int, default=8, help="the 768 x 8 preset: 8 heads of 96")
    p.add_argument("--head-dim", type=int, default=96)
    p.add_argument("--out", help="also append the JSON lines to this file")
    a = p.parse_args(argv)
    device = torch.device(a.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    rng = random.Random(0)
    lengths = rng.sample(range(200, 769), a.lengths)
    measure(device, dtype, "no-cudnn", False, [128], a.batch, a.heads, a.head_dim)   # warm up the process
    for masked in (False, True):
        for name in CHOICES:   # each choice sees lengths no earlier call used
            lens = [t + (1 if name == "no-cudnn" else 0) + (2 if masked else 0) for t in lengths]
            line = json.dumps(measure(device, dtype, name, masked, lens, a.batch, a.heads, a.head_dim))
            emit(line, a.out)


if __name__ == "__main__":
    main()
