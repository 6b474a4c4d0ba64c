"""Training throughput of the full-size MiniMind-V, ours against the original's way, in the same run.

    python benchmarks/train_throughput.py                                   # both VLM stages, dense, batch 4
    python benchmarks/train_throughput.py --stage vlm-sft --preset minimind-3v-moe --steps 3
    python benchmarks/train_throughput.py --modes original pack pack+cache --batch-size 4 8
    python benchmarks/train_throughput.py --data sft.parquet --stage vlm-sft     # rows of a real data file
    python benchmarks/train_throughput.py --device cuda --dtype bf16 --steps 10  # on a GPU

What it builds: the preset's model (768 x 8 dense, or the 4-expert MoE) with a random encoder of the
SigLIP2 B/16 shape (12 x 768, 256 patches), trainable as the stage says (VLM-pretrain: projector + LLM
layer 0; VLM-SFT: projector + whole LLM). Data: a generated parquet file in the published format with
realistic lengths (pretrain: one image + a 20-60 token caption; SFT: 40% of rows with an image, 1-2
turns, replies of 50-300 tokens), tokenised with the reference MiniMind tokenizer (tests/fixtures/reference/tokenizer).
Every mode trains on exactly the same rows, step by step.

Modes (one JSON line each):
  original      the original's way: every row padded to max length; the frozen encoder runs on every row
                (a text-only row gets a dummy white image, as the original does); features spliced with a
                Python loop over the batch that reads placeholder positions back to the host; logits and
                cross-entropy over every position (padding included), masked afterwards
  longest       ours: pad to the batch's longest row; encoder only on real images; vectorised splice;
                lm_head only on labelled positions
  pack          ours: rows packed into sequences of at most max length (attention kept within each row:
                on the CPU one causal call per row, on CUDA a block-diagonal mask)
  pack+mask     pack with the block-diagonal mask on the CPU too (how the CPU ran packing before it
                called attention per row)
  pack+cache    pack, with the frozen encoder's features read from the on-disk cache (filled before the
                timed steps, i.e. the second epoch onwards; the fill time is reported as cache_fill_s)
  pack+compile  pack, with torch.compile on the model (compile time reported, not timed)

Modes run interleaved (step i of every mode, then step i+1 ...), so a busy shared machine slows them
alike; compare modes as ratios within one run. Timing covers collation, encoder, forward, backward, grad
clipping and the AdamW step (data decoding is done before timing, as DataLoader workers would).

Fields: stage, preset, mode, batch_size, sec_per_step (mean of timed steps; _min/_max/_median too),
cpu_sec_per_step (process CPU time, CPU only), samples_per_s, useful_tokens_per_s (non-padding tokens),
padded_tokens_per_s (every token processed, padding included), pad_fraction, phase_s (encoder / forward
/ backward / optimizer seconds per step, medians), mfu (useful FLOPs / time / peak; FLOP count in
minimind_v/train/flops.py, the encoder forward included and also reported apart as encoder_gflop),
mfu_llm (LLM + projector FLOPs over the step time minus the encoder phase), peak_gflops (the matmul
GFLOP/s this script measures on this machine), mfu_cpu_time (CPU only: useful FLOPs per second of
process CPU time over the same for a large matmul, which other people's load on a shared machine
barely moves), peak_mem_mb (CPU: peak resident memory of the process
during that mode's steps; GPU: torch max_memory_allocated), loss (first timed step; the modes share one
model and take turns updating it, so losses drift apart a little: exactness is what tests/test_packing.py
checks).
"""
from __future__ import annotations

import os

# Threads that wait at the end of a parallel region sleep instead of spinning (libgomp's default spins).
# On a shared, oversubscribed CPU the spinning thread steals the core its partner needs: measured 5-10x
# slower steps there (docs/perf.md). Set before torch loads OpenMP; OMP_WAIT_POLICY=ACTIVE overrides.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse  # noqa: E402
import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import random  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]

from minimind_v.config import preset, torch_device, torch_dtype  # noqa: E402
from minimind_v.data.collate import Collator  # noqa: E402
from minimind_v.data.parquet import VLMDataset  # noqa: E402
from minimind_v.hf.pixels import packed_pixels  # noqa: E402
from minimind_v.image import blank_image  # noqa: E402
from minimind_v.model.vlm import MiniMindVLM  # noqa: E402
from minimind_v.tokenizer import Tokenizer  # noqa: E402
from minimind_v.train.flops import flops_breakdown, measure_peak, trainable_fraction  # noqa: E402
from minimind_v.train.stages import get_stage, set_trainable  # noqa: E402

MODES = ("original", "longest", "pack", "pack+mask", "pack+cache", "pack+compile")
DEFAULT_MODES = ("original", "longest", "pack", "pack+cache")
REF_TOKENIZER = ROOT / "tests" / "fixtures" / "reference" / "tokenizer"


# ----------------------------------------------------------------------------------------------------
# data
# ----------------------------------------------------------------------------------------------------
def load_tokenizer(path: str | None) -> Tokenizer:
    """The given folder, else the reference MiniMind tokenizer from tests/fixtures, else (a copy of the script
    without the repository) a small one trained on the built-in synthetic corpus (lengths then count its tokens)."""
    if path:
        return Tokenizer.load(path)
    if (REF_TOKENIZER / "tokenizer.json").exists():
        return Tokenizer.load(REF_TOKENIZER)
    from minimind_v.datatools import synth
    from minimind_v.tokenizer import train_tokenizer
    print(f"[bench] {REF_TOKENIZER} is absent: training a small tokenizer on the synthetic corpus (row "
          f"lengths are then counted in its tokens; pass --tokenizer for the real one)", file=sys.stderr)
    out = Path(tempfile.mkdtemp(prefix="bench-tok-"))
    return train_tokenizer(synth.corpus(2000, 0), vocab_size=6400, out=out, show_progress=False)


def model_vocab(tok: Tokenizer) -> int:
    """The recipe's 6400 rows of embedding / lm_head even when the fallback tokenizer is smaller, so
    that the model (and its FLOPs) is the real one."""
    return max(tok.vocab_size, 6400)


def text_pieces(tok: Tokenizer) -> list[str]:
    """Vocabulary entries that decode to clean text: random text of ~n tokens = n random pieces."""
    pieces = []
    for i in range(13, tok.vocab_size):
        s = tok.decode([i])
        if s and "\ufffd" not in s and "<" not in s and s.isprintable():
            pieces.append(s)
    return pieces


def random_text(rng: random.Random, pieces: list[str], n: int) -> str:
    return "".join(rng.choice(pieces) for _ in range(n))


def emit(line: str, out: str | None) -> None:
    """Print one JSON line, and append it to `out` too when given (every benchmark's --out)."""
    print(line, flush=True)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


def random_image(rng: random.Random, side: int = 384) -> bytes:
    """A smooth random picture (an upsampled 8 x 8 colour grid) as JPEG bytes, like a photo's size."""
    from PIL import Image
    small = Image.frombytes("RGB", (8, 8), bytes(rng.randrange(256) for _ in range(8 * 8 * 3)))
    buf = io.BytesIO()
    small.resize((side, side), Image.Resampling.BICUBIC).save(buf, format="JPEG", quality=85)
    return buf.getvalue()


def generate_rows(stage: str, n: int, tok: Tokenizer, seed: int = 0) -> list[dict]:
    """Rows in the published format with the length distribution of the real sets."""
    rng = random.Random(seed)
    pieces = text_pieces(tok)
    rows = []
    for i in range(n):
        if stage == "vlm-pretrain":
            conv = [{"role": "user", "content": "<image>\n" + random_text(rng, pieces, rng.randint(4, 10))},
                    {"role": "assistant", "content": random_text(rng, pieces, rng.randint(20, 60))}]
            image = True
        else:
            image = rng.random() < 0.4
            conv = []
            for t in range(1 if rng.random() < 0.8 else 2):
                q = random_text(rng, pieces, rng.randint(10, 60))
                conv += [{"role": "user", "content": ("<image>\n" if image and t == 0 else "") + q},
                         {"role": "assistant", "content": random_text(rng, pieces, rng.randint(50, 300))}]
        rows.append({"conversations": json.dumps(conv, ensure_ascii=False),
                     "image_bytes": random_image(rng) if image else None,
                     "image_names": f"bench/{i}.jpg" if image else ""})
    return rows


def write_parquet(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    table = pa.table({"conversations": [r["conversations"] for r in rows],
                      "image_bytes": pa.array([r["image_bytes"] for r in rows], pa.binary()),
                      "image_names": [r["image_names"] for r in rows]})
    pq.write_table(table, path)
    return path


def load_samples(path: Path, tok: Tokenizer, cfg, max_length: int, n: int) -> list:
    """The first n usable rows, decoded and tokenised (bad rows are skipped and counted), with the
    pictures' content hashes for the encoder-cache configurations."""
    ds = VLMDataset([str(path)], tok, cfg, max_length, image_keys=True)
    out, bad = [], 0
    for i in range(len(ds)):
        s = ds[i]
        if hasattr(s, "input_ids"):
            out.append(s)
        else:
            bad += 1
        if len(out) == n:
            break
    if len(out) < n:
        raise SystemExit(f"{path} has only {len(out)} usable rows ({bad} skipped); need {n}")
    return out


# ----------------------------------------------------------------------------------------------------
# the original's training step, emulated with our modules
# ----------------------------------------------------------------------------------------------------
def original_pixels(rows, dummy: torch.Tensor) -> tuple[torch.Tensor, list[int]]:
    """One entry per image, plus a dummy white picture for each text-only row (the original encodes one
    for every row). Returns the stacked patches and the indices of the real images among them."""
    pv, real = [], []
    for s in rows:
        if s.pixel_values is None:
            pv.append(dummy[None])
        else:
            real += list(range(len(pv), len(pv) + s.pixel_values.shape[0]))
            pv.append(s.pixel_values)
    return torch.cat(pv), real


def splice_loop(model, input_ids, h, visual):
    """The original's splice: per row, read the placeholder positions back to the host and rebuild the
    row with torch.cat around each image's run."""
    n_img = model.cfg.image_token_len
    out, j = [], 0
    for b in range(input_ids.shape[0]):
        pos = (input_ids[b] == model.cfg.image_token_id).nonzero().flatten().tolist()
        hb = h[b]
        for k in range(0, len(pos), n_img):
            s = pos[k]
            hb = torch.cat([hb[:s], visual[j].to(hb.dtype), hb[s + n_img:]], 0)
            j += 1
        out.append(hb)
    return torch.stack(out)


def original_loss(model, batch, feats, real_idx):
    h = model.model.embed_tokens(batch.input_ids)
    visual = model.project(feats)                          # every row's features, dummies included
    h = splice_loop(model, batch.input_ids, h, visual[real_idx])
    hidden = model.decode(h)
    logits = model.lm_head(hidden)                         # every position, padding included
    tgt = batch.labels[:, 1:]
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), tgt.reshape(-1),
                         reduction="none", ignore_index=-100)
    mask = (tgt != -100).reshape(-1).float()
    loss = (ce * mask).sum() / mask.sum()
    aux = model.aux_loss()
    return loss + aux if aux is not None else loss


# ----------------------------------------------------------------------------------------------------
# measuring
# ----------------------------------------------------------------------------------------------------
class PeakRSS:
    """Peak resident memory of this process while active (CPU), sampled every ~2 ms from /proc."""

    def __init__(self):
        self.page = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
        self.peak = 0
        self._on = False
        self._thread = None

    def rss(self) -> int:
        try:
            with open("/proc/self/statm") as f:
                return int(f.read().split()[1]) * self.page
        except OSError:
            import resource
            return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def _loop(self):
        while self._on:
            self.peak = max(self.peak, self.rss())
            time.sleep(0.002)

    def __enter__(self):
        self.peak = self.rss()
        self._on = True
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._on = False
        self._thread.join()
        self.peak = max(self.peak, self.rss())


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


def peak_per_cpu_second(dtype, n: int = 1024, seconds: float = 1.0) -> float:
    """Matmul FLOPs per second of process CPU time: a peak that other people's load does not move
    (wall-clock peaks fall when the machine is busy), for the CPU-time MFU."""
    a, b = torch.randn(n, n, dtype=dtype), torch.randn(n, n, dtype=dtype)
    a @ b
    reps, c0, t0 = 0, cpu_seconds(), time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        reps += 1
    return 2.0 * n ** 3 * reps / max(1e-9, cpu_seconds() - c0)


class Bench:
    """One model + optimizer for a (stage, preset); runs one step of any mode on given rows."""

    def __init__(self, args, stage: str, preset_name: str, tok: Tokenizer, device, dtype, data_name: str):
        self.args, self.device, self.dtype = args, device, dtype
        self.preset_name, self.data_name, self.cache_fill_s = preset_name, data_name, 0.0
        self.stage = get_stage(stage)
        over = dict(vocab_size=model_vocab(tok), image_token_id=tok.image_id, pad_token_id=tok.pad_id,
                    bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
        cfg = preset(preset_name, **over)
        if args.encoder_layers:
            cfg.vision.siglip = dict(cfg.vision.siglip, num_hidden_layers=args.encoder_layers)
        torch.manual_seed(args.seed)
        self.model = MiniMindVLM(cfg)
        set_trainable(self.model, self.stage.trainable)
        self.model.to(device).train()
        self.cfg = self.model.cfg
        self.params = [p for p in self.model.parameters() if p.requires_grad]
        # ours: fused AdamW (one pass per tensor, CPU and GPU); the original's: AdamW with default options
        # (a Python loop over tensors on CPU, foreach on GPU); each keeps its own state
        self.opt = torch.optim.AdamW(self.params, lr=1e-6, betas=(0.9, 0.95), weight_decay=0.01, fused=True)
        self.opt_original = torch.optim.AdamW(self.params, lr=1e-6)
        self.max_length = args.max_length or self.stage.max_length
        self.pad_id = tok.pad_id
        self.dummy = torch.from_numpy(packed_pixels(blank_image(self.cfg.vision.image_size), self.cfg.vision))
        self.autocast = (torch.autocast(device.type, dtype=dtype) if dtype != torch.float32
                         else contextlib.nullcontext())
        self.cache = None
        self.compiled = None
        self.trainable_fraction = trainable_fraction(self.model)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def fill_cache(self, samples, folder) -> float:
        from minimind_v.train.encoder_cache import EncoderCache
        t0 = time.perf_counter()
        self.cache = EncoderCache(folder, self.model, self.dtype)
        for i in range(0, len(samples), 8):
            b = Collator(self.pad_id, "longest")(samples[i:i + 8])
            if b.pixel_values is not None:
                with self.autocast:
                    self.cache.features(self.model, b.pixel_values.to(self.device), b.image_keys)
        self.sync()
        return time.perf_counter() - t0

    def compile(self):
        self.compiled = torch.compile(self.model, dynamic=True)

    def step(self, mode: str, rows, timed_phases: bool) -> dict:
        """One optimizer step; returns timings (s) and the batch's token counts."""
        m, dev = self.model, self.device
        phase_sync = self.sync if timed_phases else (lambda: None)
        t0 = time.perf_counter()
        if mode == "original":
            batch = Collator(self.pad_id, "max", self.max_length)(rows)
            pv, real_idx = original_pixels(rows, self.dummy)
            batch.to(dev, non_blocking=True)
            n_enc = pv.shape[0]
            with self.autocast:
                with torch.no_grad():
                    feats = m.vision_encoder(pv.to(dev, non_blocking=True))
                phase_sync()
                t1 = time.perf_counter()
                loss = original_loss(m, batch, feats, real_idx)
        else:
            collate_mode = "longest" if mode == "longest" else "pack"
            batch = Collator(self.pad_id, collate_mode, self.max_length)(rows)
            batch.to(dev, non_blocking=True)
            n_enc = batch.n_images if mode != "pack+cache" else 0
            with self.autocast:
                feats = None
                if batch.pixel_values is not None:
                    if mode == "pack+cache":
                        feats = self.cache.features(m, batch.pixel_values, batch.image_keys)
                    else:
                        with torch.no_grad():
                            feats = m.vision_encoder(batch.pixel_values)
                phase_sync()
                t1 = time.perf_counter()
                fwd = self.compiled if mode == "pack+compile" else m
                m.split_packed_rows = mode != "pack+mask"
                out = fwd(batch.input_ids, labels=batch.labels, vision_features=feats,
                          position_ids=batch.position_ids, seq_ids=batch.seq_ids, label_index=batch.label_index)
                loss = out.loss + out.aux_loss if out.aux_loss is not None else out.loss
        phase_sync()
        t2 = time.perf_counter()
        loss.backward()
        phase_sync()
        t3 = time.perf_counter()
        torch.nn.utils.clip_grad_norm_(self.params, 1.0)
        opt = self.opt_original if mode == "original" else self.opt
        opt.step()
        opt.zero_grad(set_to_none=True)
        self.sync()
        t4 = time.perf_counter()
        return {"total": t4 - t0, "encoder": t1 - t0, "forward": t2 - t1, "backward": t3 - t2,
                "optimizer": t4 - t3, "loss": loss.detach(), "n_enc": n_enc, "batch": batch}


def run_config(args, bench: Bench, samples, bs: int, modes: list[str], peak: float) -> list[dict]:
    """Warm-up then timed steps of every mode, interleaved; one result dict per mode."""
    n_steps = args.warmup + args.steps
    gpu = bench.device.type == "cuda"
    rec = {m: {"times": [], "cpu": [], "phases": [], "mem": 0, "loss": None, "batches": [], "n_enc": 0}
           for m in modes}
    compile_s = None
    if "pack+compile" in modes:
        bench.compile()
        t0 = time.perf_counter()
        for i in range(n_steps):      # compile every shape variant the timed steps will see
            bench.step("pack+compile", samples[i * bs:(i + 1) * bs], False)
        compile_s = time.perf_counter() - t0
    for i in range(n_steps):
        rows = samples[i * bs:(i + 1) * bs]
        for mode in modes:
            if gpu:
                torch.cuda.reset_peak_memory_stats()
            c0 = cpu_seconds()
            with PeakRSS() as mem:
                r = bench.step(mode, rows, timed_phases=args.breakdown or not gpu)
            c1 = cpu_seconds()
            if i < args.warmup:
                continue
            st = rec[mode]
            st["times"].append(r["total"])
            st["cpu"].append(c1 - c0)
            st["phases"].append({k: r[k] for k in ("encoder", "forward", "backward", "optimizer")})
            st["mem"] = max(st["mem"], torch.cuda.max_memory_allocated() if gpu else mem.peak)
            st["loss"] = float(r["loss"]) if st["loss"] is None else st["loss"]
            st["batches"].append(r["batch"])
            st["n_enc"] += r["n_enc"]
            print(f"[bench] {bench.stage.name} {mode:13s} step {i - args.warmup + 1}/{args.steps}: "
                  f"{r['total']:.2f} s", file=sys.stderr, flush=True)
    results = []
    for mode in modes:
        results.append(summarise(args, bench, mode, bs, rec[mode], peak, compile_s))
    return results


def summarise(args, bench, mode, bs, st, peak, compile_s) -> dict:
    n = len(st["times"])
    sec = sum(st["times"]) / n
    batches = st["batches"]
    real = sum(b.n_real_tokens for b in batches) / n
    tokens = sum(b.n_tokens for b in batches) / n
    labels = sum(b.n_label_tokens for b in batches) / n
    images = sum(b.n_images for b in batches) / n
    sum_sq = sum(b.sum_sq_len for b in batches) / n
    parts = flops_breakdown(bench.cfg, real, labels, sum_sq, images, bench.trainable_fraction,
                            head_trained=bench.model.lm_head.weight.requires_grad)
    # phases: medians over the timed steps (one step descheduled by other people's work would
    # otherwise dominate a mean)
    phases = {k: round(statistics.median(p[k] for p in st["phases"]), 4) for k in st["phases"][0]}
    if mode == "pack+cache":
        parts["encoder"] = 0.0        # read from the cache: the step does not run the encoder
    total_flops = sum(parts.values())
    llm_flops = total_flops - parts["encoder"]
    llm_time = max(1e-9, sec - phases["encoder"])
    out = {
        "stage": bench.stage.name, "preset": bench.preset_name, "mode": mode, "batch_size": bs,
        "max_length": bench.max_length, "steps": n, "warmup": args.warmup,
        "sec_per_step": round(sec, 4), "sec_per_step_min": round(min(st["times"]), 4),
        "sec_per_step_max": round(max(st["times"]), 4),
        "sec_per_step_median": round(statistics.median(st["times"]), 4),
        "cpu_sec_per_step": round(sum(st["cpu"]) / n, 4) if bench.device.type == "cpu" else None,
        "mfu_cpu_time": (round(total_flops / (sum(st["cpu"]) / n) / args.peak_cpu, 4)
                         if bench.device.type == "cpu" else None),
        "samples_per_s": round(bs / sec, 4),
        "useful_tokens_per_s": round(real / sec, 1),
        "padded_tokens_per_s": round(tokens / sec, 1),
        "pad_fraction": round(1 - real / tokens, 4),
        "useful_tokens_per_step": round(real, 1), "tokens_per_step": round(tokens, 1),
        "images_per_step": round(images, 2), "encoder_images_per_step": round(st["n_enc"] / n, 2),
        "phase_s": phases,
        "gflop_per_step": round(total_flops / 1e9, 1), "encoder_gflop": round(parts["encoder"] / 1e9, 1),
        "mfu": round(total_flops / sec / peak, 4),
        "mfu_llm": round(llm_flops / llm_time / peak, 4),
        "peak_gflops": round(peak / 1e9, 1),
        "peak_mem_mb": round(st["mem"] / 2 ** 20, 1),
        "loss": round(st["loss"], 5),
        "dtype": str(bench.dtype).replace("torch.", ""), "device": str(bench.device),
        "threads": torch.get_num_threads() if bench.device.type == "cpu" else None,
        "data": bench.data_name,
    }
    if mode == "pack+compile":
        out["compile_s"] = round(compile_s, 1)
    if mode == "pack+cache":
        out["cache_fill_s"] = round(bench.cache_fill_s, 2)
    return out


def machine_info(device) -> dict:
    info = {"torch": torch.__version__, "python": platform.python_version(), "cpus": os.cpu_count(),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY")}
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    if hasattr(os, "getloadavg"):
        info["loadavg"] = [round(x, 2) for x in os.getloadavg()]
    return info


def print_summary(results: list[dict]) -> None:
    """A readable table on stderr: each mode against `original` of the same configuration."""
    base = {}
    for r in results:
        if r["mode"] == "original":
            base[(r["stage"], r["preset"], r["batch_size"])] = r
    print("\nstage         preset            bs  mode           s/step  useful tok/s  x original  x (CPU time)  pad    MFU",
          file=sys.stderr)
    for r in results:
        b = base.get((r["stage"], r["preset"], r["batch_size"]))
        ratio = f"{r['useful_tokens_per_s'] / b['useful_tokens_per_s']:.2f}" if b else "-"
        cpu = (f"{b['cpu_sec_per_step'] / r['cpu_sec_per_step']:.2f}"
               if b and r.get("cpu_sec_per_step") and b.get("cpu_sec_per_step") else "-")
        print(f"{r['stage']:13s} {r['preset']:17s} {r['batch_size']:3d}  {r['mode']:13s} {r['sec_per_step']:7.2f} "
              f"{r['useful_tokens_per_s']:12.1f}  {ratio:>10s}  {cpu:>12s}  {r['pad_fraction']:.2f}  {r['mfu']:.3f}",
              file=sys.stderr)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description="Training throughput of the full-size MiniMind-V: the original's "
                                            "way against ours, measured in the same run (one JSON line per "
                                            "configuration on stdout).")
    p.add_argument("--stage", nargs="+", default=["vlm-sft", "vlm-pretrain"], choices=["vlm-sft", "vlm-pretrain"])
    p.add_argument("--preset", nargs="+", default=["minimind-3v"],
                   help="model presets (minimind-3v, minimind-3v-moe; tiny for a smoke test)")
    p.add_argument("--modes", nargs="+", default=list(DEFAULT_MODES), choices=MODES)
    p.add_argument("--batch-size", nargs="+", type=int, default=[4], help="rows per optimizer step")
    p.add_argument("--steps", type=int, default=3, help="timed steps per mode")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps per mode first")
    p.add_argument("--data", help="parquet file in the published format to take rows from (else generated)")
    p.add_argument("--max-length", type=int, help="tokens per row (default: the stage's, 768 / 360)")
    p.add_argument("--tokenizer", help="tokenizer folder (default: the reference one in tests/fixtures)")
    p.add_argument("--device", default="auto", help="auto, cpu or cuda")
    p.add_argument("--dtype", default="auto", choices=["auto", "fp32", "bf16"],
                   help="auto: fp32 on CPU, bf16 autocast on GPU")
    p.add_argument("--threads", type=int, default=2, help="CPU threads (the reference figures used 2)")
    p.add_argument("--breakdown", action="store_true",
                   help="on GPU, synchronise between phases to time them (CPU always times them)")
    p.add_argument("--encoder-layers", type=int, help="override the encoder depth (smoke tests only)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="also append the JSON lines to this file")
    return p.parse_args(argv)


def setup_device(args):
    """(device, dtype) from --device / --dtype (auto: bf16 on CUDA, fp32 on CPU); CPU threads from --threads."""
    device = torch_device(args.device)
    dtype = torch_dtype(args.dtype, device)
    if device.type == "cpu":
        torch.set_num_threads(args.threads)
    return device, dtype


def main(argv=None) -> int:
    args = parse_args(argv)
    device, dtype = setup_device(args)
    tok = load_tokenizer(args.tokenizer)
    info = machine_info(device)
    peak = measure_peak(device, dtype, n=1024 if device.type == "cpu" else 8192, seconds=0.5, repeats=3)
    args.peak_cpu = peak_per_cpu_second(dtype) if device.type == "cpu" else None
    print(f"[bench] {json.dumps(info)}; measured matmul peak {peak / 1e9:.1f} GFLOP/s ({dtype})",
          file=sys.stderr, flush=True)
    need = (args.warmup + args.steps) * max(args.batch_size)
    results = []
    work = Path(tempfile.mkdtemp(prefix="bench-train-"))
    for stage in args.stage:
        if args.data:
            path, data_name = Path(args.data), Path(args.data).name
        else:
            path = write_parquet(generate_rows(stage, need + 16, tok, args.seed), work / f"{stage}.parquet")
            data_name = f"generated:{stage}"
        for preset_name in args.preset:
            bench = Bench(args, stage, preset_name, tok, device, dtype, data_name)
            samples = load_samples(path, tok, bench.cfg, bench.max_length, need)
            if "pack+cache" in args.modes:
                bench.cache_fill_s = bench.fill_cache(samples, work / "encoder-cache")
            for bs in args.batch_size:
                for r in run_config(args, bench, samples, bs, list(args.modes), peak):
                    r["machine"] = info
                    results.append(r)
                    line = json.dumps(r)
                    emit(line, args.out)
            del bench
    print_summary(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
