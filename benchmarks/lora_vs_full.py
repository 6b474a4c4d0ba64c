"""LoRA (PEFT) against full fine-tuning, the VLM-SFT stage at full size: trainable parameters, seconds per
optimizer step, peak memory. Prints one JSON line.

    python benchmarks/lora_vs_full.py                                  # minimind-3v, batch 4 x 512 tokens, rank 16
    python benchmarks/lora_vs_full.py --preset tiny --steps 1          # a smoke test of the plumbing
    python benchmarks/lora_vs_full.py --rank 8 --targets attn --out benchmarks/results/cpu-lora.jsonl

What it builds: the preset's model with random weights (the LLM, the projector; no encoder: the frozen
encoder costs both modes the same, so the rows carry encoder features, one picture of 256 x 768 per row,
as `--encoder-cache` would hand them over). Rows of `--seq-len` tokens, 64 of them picture placeholders,
labels on the second half. Modes:
  full   what `train --stage vlm-sft` trains: projector + the whole LLM (fused AdamW)
  lora   what `train --stage vlm-sft --lora-rank R` trains: LoRA on the LLM's linear layers
         (`--targets`) + the projector fully (PEFT modules_to_save), the rest frozen

Each mode runs in its own child process (same seed, same rows), so peak memory (the process's peak
resident set; GPU: max_memory_allocated) is that mode's alone; both children import peft (and with it
transformers, as a real training run does), so the import is not counted against one mode.
train_state_mb is exact arithmetic, not a measurement: the bytes of parameters, gradients and AdamW
state after a step (what LoRA saves, whatever the activations cost). A step is forward, backward, grad clipping
and the AdamW step, timed after `--warmup` untimed steps. Fields: preset, batch_size, seq_len, steps,
rank, targets, and per mode: trainable_params, sec_per_step (median; _min, _max too), peak_mem_mb,
train_state_mb, loss
(first timed step); lora_over_full ratios of the three measures; machine.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")     # see docs/perf.md "The environment"

import argparse  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402

import torch  # noqa: E402

from train_throughput import emit, machine_info  # noqa: E402

from minimind_v.config import preset  # noqa: E402
from minimind_v.model.vlm import MiniMindVLM  # noqa: E402
from minimind_v.train.lora import lora_config  # noqa: E402
from minimind_v.train.stages import get_stage, set_trainable  # noqa: E402


def build(a, mode: str, device):
    torch.manual_seed(0)
    cfg = preset(a.preset)
    model = MiniMindVLM(cfg, vision=False).to(device)
    set_trainable(model, get_stage("vlm-sft").trainable)
    if mode == "lora":
        from peft import get_peft_model
        get_peft_model(model, lora_config(a.rank, None, 0.0, a.targets, train_projector=True))
    return model


def batch(cfg, a, device):
    g = torch.Generator().manual_seed(1)
    n_img = cfg.image_token_len
    ids = torch.randint(20, cfg.vocab_size, (a.batch_size, a.seq_len), generator=g)
    ids[:, 4:4 + n_img] = cfg.image_token_id
    labels = ids.clone()
    labels[:, : a.seq_len // 2] = -100
    patches = n_img * cfg.merge
    feats = torch.randn(a.batch_size, patches, cfg.vision.hidden_size, generator=g)
    return ids.to(device), labels.to(device), feats.to(device)


def child(a) -> dict:
    device = torch.device("cuda" if a.device == "auto" and torch.cuda.is_available() else
                          ("cpu" if a.device == "auto" else a.device))
    import peft  # noqa: F401  (both modes pay the import: see the docstring)
    model = build(a, a.child, device).train()
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=1e-5, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
    ids, labels, feats = batch(model.cfg, a, device)
    times, loss0 = [], None
    for i in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        loss = model(ids, labels=labels, vision_features=feats).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= a.warmup:
            times.append(time.perf_counter() - t0)
            loss0 = float(loss) if loss0 is None else loss0
    state = [t for st in opt.state.values() for t in st.values() if torch.is_tensor(t)]
    state_mb = (sum(t.numel() * t.element_size() for t in list(model.parameters()) + state)
                + sum(p.numel() * p.element_size() for p in params)) / 2**20      # + one gradient per trainable
    peak = (torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda"
            else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    return {"trainable_params": sum(p.numel() for p in params), "sec_per_step": round(statistics.median(times), 3),
            "sec_per_step_min": round(min(times), 3), "sec_per_step_max": round(max(times), 3),
            "peak_mem_mb": round(peak, 1), "train_state_mb": round(state_mb, 1), "loss": round(loss0, 4), "device": device.type}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--preset", default="minimind-3v")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--seq-len", type=int, default=512)
    p.add_argument("--rank", type=int, default=16)
    p.add_argument("--targets", default="all")
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--out", help="append the JSON line to this file too")
    p.add_argument("--child", choices=["full", "lora"], help=argparse.SUPPRESS)
    a = p.parse_args()
    torch.set_num_threads(a.threads)
    if a.child:
        print(json.dumps(child(a)), flush=True)
        return
    res = {}
    for mode in ("full", "lora"):
        cmd = [sys.executable, __file__, *sys.argv[1:], "--child", mode]
        r = subprocess.run(cmd, capture_output=True, text=True)
        if r.returncode != 0:
            raise SystemExit(f"{mode} failed:\n{r.stderr[-3000:]}")
        res[mode] = json.loads(r.stdout.strip().splitlines()[-1])
        print(f"[lora_vs_full] {mode}: {res[mode]}", file=sys.stderr, flush=True)
    f, lo = res["full"], res["lora"]
    line = {"benchmark": "lora_vs_full", "stage": "vlm-sft", "preset": a.preset, "batch_size": a.batch_size,
            "seq_len": a.seq_len, "steps": a.steps, "warmup": a.warmup, "threads": a.threads, "rank": a.rank,
            "targets": a.targets, "full": f, "lora": lo,
            "lora_over_full": {k: round(lo[k] / f[k], 4) for k in ("trainable_params", "sec_per_step", "peak_mem_mb",
                                                                  "train_state_mb")},
            "peft": __import__("peft").__version__,
            "machine": machine_info(torch.device(f["device"] if f["device"] == "cpu" else "cuda"))}
    emit(json.dumps(line), a.out)


if __name__ == "__main__":
    main()
