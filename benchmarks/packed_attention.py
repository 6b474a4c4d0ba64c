"""Attention over packed rows: one block-diagonal mask over the whole sequence vs one causal call per row.

    python benchmarks/packed_attention.py                  # CPU, 2 threads, the full model's head shape
    python benchmarks/packed_attention.py --threads 1 --repeats 5

A packed sequence holds several rows; each token may only see earlier tokens of its own row. With a
boolean mask, SDPA computes every query-key pair of the sequence (a 600-token sequence of two 300-token
rows: 600^2 pairs, of which 2 x 300^2 / 2 are wanted). With one `is_causal` call per row the kernel
computes only each row's lower triangle. The model does the latter on the CPU (`model/llm.py`
`row_segments`) and keeps the mask on CUDA (one kernel launch per row per layer would cost more there).
For each set of row lengths this times forward + backward of both, same inputs, interleaved, and prints
one JSON line: mask_ms, per_row_ms (best of --repeats), speedup.
"""
from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # see docs/perf.md "The environment"

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROWS = {   # row lengths per packed sequence: the SFT benchmark's typical bins, and shorter rows
    "2 x 300": [300, 300],
    "150+200+250": [150, 200, 250],
    "6 x 100": [100] * 6,
    "1 x 600 (no packing)": [600],
}


def step(q, k, v, lens, per_row: bool):
    if per_row:
        outs, a = [], 0
        for n in lens:
            outs.append(F.scaled_dot_product_attention(q[:, :, a:a + n], k[:, :, a:a + n], v[:, :, a:a + n],
                                                       is_causal=True, enable_gqa=True))
            a += n
        out = torch.cat(outs, dim=2)
    else:
        ids = torch.cat([torch.full((n,), i) for i, n in enumerate(lens)])
        pos = torch.arange(len(ids))
        mask = (pos[None, :] <= pos[:, None]) & (ids[None, :] == ids[:, None])
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask[None, None], enable_gqa=True)
    out.sum().backward()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=4)
    ap.add_argument("--heads", type=int, default=8)
    ap.add_argument("--kv-heads", type=int, default=2)
    ap.add_argument("--head-dim", type=int, default=96)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    for name, lens in ROWS.items():
        t = sum(lens)
        q = torch.randn(1, a.heads, t, a.head_dim, requires_grad=True)
        k = torch.randn(1, a.kv_heads, t, a.head_dim, requires_grad=True)
        v = torch.randn(1, a.kv_heads, t, a.head_dim, requires_grad=True)
        best = {"mask": float("inf"), "per_row": float("inf")}
        for _ in range(a.repeats):
            for mode in best:
                t0 = time.perf_counter()
                step(q, k, v, lens, per_row=mode == "per_row")
                best[mode] = min(best[mode], time.perf_counter() - t0)
                q.grad = k.grad = v.grad = None
        print(json.dumps({"rows": name, "tokens": t, "threads": a.threads, "heads": a.heads, "kv_heads": a.kv_heads,
                          "head_dim": a.head_dim, "mask_ms": round(best["mask"] * 1e3, 2),
                          "per_row_ms": round(best["per_row"] * 1e3, 2),
                          "speedup": round(best["mask"] / best["per_row"], 2),
                          "loadavg": round(os.getloadavg()[0], 2)}), flush=True)


if __name__ == "__main__":
    main()
