"""One training loop for every stage.

A stage (stages.py) only decides what is trainable, the default lr / max length and which reader
parses the data; everything else is shared: AdamW with cosine decay to min_lr (after optional linear
warm-up), gradient accumulation (DDP all-reduce only on the last micro-step), grad clipping, bf16
autocast on GPU (fp16 with a GradScaler when bf16 is unavailable), bad rows skipped and counted,
non-finite losses skipped, metrics logged every `log_every` optimizer steps with loss, lr, step time,
samples/s, real (non-pad) tokens/s and MFU, checkpoints every `save_every` steps and on SIGTERM/SIGINT,
and the final model folder written to OUT/model.

    from minimind_v import TrainConfig, train
    train(TrainConfig(stage="vlm-sft", data=["sft.parquet"], out="runs/sft", init_from="runs/pt/model"))
"""
from __future__ import annotations

import contextlib
import json
import math
import signal
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from ..config import ModelConfig, preset
from ..data.collate import Collator
from ..data.parquet import VLMDataset
from ..data.text import TextDataset
from ..model.folder import load_model, save_model
from ..model.vlm import MiniMindVLM
from ..tokenizer import Tokenizer
from . import checkpoint as ckpt
from .distributed import all_reduce_sum, cleanup, setup
from .flops import measure_peak, train_flops
from .metrics import MetricsLog, plot_curves, read_metrics
from .sampler import StepSampler
from .stages import TRAINABLE_CHOICES, get_stage, set_trainable


@dataclass
class TrainConfig:
    stage: str
    data: list[str]
    out: str
    init_from: str | None = None          # a model folder from the previous stage (--from)
    preset: str = "tiny"                  # used when init_from is None
    model_overrides: dict = field(default_factory=dict)
    tokenizer: str | None = None          # tokenizer folder (needed when init_from is None)
    vision_encoder: str | None = None     # SigLIP2 folder to load (frozen) when building from a preset
    epochs: int = 1
    max_steps: int | None = None          # stop after this many optimizer steps (overrides epochs)
    batch_size: int = 16
    grad_accum: int = 1
    lr: float | None = None               # stage default when None
    min_lr: float | None = None
    warmup_steps: int = 0
    weight_decay: float = 0.01
    grad_clip: float = 1.0
    max_length: int | None = None
    padding: str = "longest"              # longest | max | pack
    trainable: str | None = None          # override the stage: llm, projector, projector+layer0, ...
    unfreeze_vision: bool = False
    dtype: str = "auto"                   # auto (bf16 on GPU, fp32 on CPU) | fp32 | bf16 | fp16
    device: str = "auto"
    num_workers: int = 0
    seed: int = 42
    log_every: int = 10
    save_every: int = 0                   # checkpoint every N optimizer steps (0: only at the end / on signal)
    keep_last: int = 2
    resume: str | None = None             # checkpoint folder, or "auto" (newest valid in OUT, else start)
    logger: str = "none"                  # none | wandb | swanlab
    max_bad_steps: int = 20               # abort after this many non-finite losses in a row
    think_block: bool = False
    progress: bool = True
    save_final: bool = True
    plot: bool = True

    def to_json(self) -> dict:
        return asdict(self)


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def _dtype(name: str, device: torch.device) -> torch.dtype:
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[name]


def build_model(cfg: TrainConfig, tok: Tokenizer, log) -> MiniMindVLM:
    stage = get_stage(cfg.stage)
    if cfg.init_from:
        model = load_model(cfg.init_from, vision=stage.vision or True)
        log(f"initialised from {cfg.init_from}")
        return model
    mcfg: ModelConfig = preset(cfg.preset, **cfg.model_overrides)
    mcfg = mcfg.replace(vocab_size=tok.vocab_size, image_token_id=tok.image_id, pad_token_id=tok.pad_id,
                        bos_token_id=tok.bos_id, eos_token_id=tok.eos_id)
    if cfg.vision_encoder:
        mcfg = mcfg.replace(vision=dict(mcfg.vision.__dict__, path=str(Path(cfg.vision_encoder).resolve()),
                                        siglip=None))
    log(f"new model from preset {cfg.preset!r} (random weights)")
    return MiniMindVLM(mcfg)


def build_dataset(cfg: TrainConfig, tok: Tokenizer, mcfg: ModelConfig, max_length: int):
    files = [str(f) for f in cfg.data]
    for f in files:
        if not Path(f).exists():
            raise FileNotFoundError(f"data file {f} does not exist")
    if all(f.endswith(".parquet") for f in files):
        return VLMDataset(files, tok, mcfg, max_length, think_block=cfg.think_block)
    if all(f.endswith((".jsonl", ".json")) for f in files):
        return TextDataset(files, tok, max_length, mcfg.image_token_len)
    raise ValueError("data files must be all .parquet or all .jsonl")


def cosine_lr(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))


class _Stop:
    """Turns SIGTERM / SIGINT into a flag checked between steps (then a checkpoint is written)."""

    def __init__(self):
        self.flag = False
        self._old = {}

    def __enter__(self):
        for s in (signal.SIGTERM, signal.SIGINT):
            try:
                self._old[s] = signal.signal(s, self._handle)
            except ValueError:       # not the main thread
                pass
        return self

    def _handle(self, signum, frame):
        if self.flag:               # second signal: stop now
            raise KeyboardInterrupt
        self.flag = True

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)


def train(cfg: TrainConfig) -> dict:
    """Run one stage. Returns a summary dict (final loss, steps, skipped rows, model folder...)."""
    device = _device(cfg.device)
    dist = setup(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    out = Path(cfg.out)
    log = (lambda msg: print(f"[train] {msg}", flush=True)) if dist.main else (lambda msg: None)
    stage = get_stage(cfg.stage)
    torch.manual_seed(cfg.seed)

    tok_dir = cfg.tokenizer or cfg.init_from
    if tok_dir is None:
        raise ValueError("give a tokenizer folder (--tokenizer) or a model folder to start from (--from)")
    tok = Tokenizer.load(tok_dir)
    model = build_model(cfg, tok, log)
    mcfg = model.cfg
    prefixes = TRAINABLE_CHOICES[cfg.trainable] if cfg.trainable else stage.trainable
    n_train = set_trainable(model, prefixes, cfg.unfreeze_vision)
    dtype = _dtype(cfg.dtype, device)
    model.to(device)
    log(f"stage {stage.name}: {n_train:,} trainable of {model.num_parameters(include_vision=True):,} parameters "
        f"(LLM+projector {model.num_parameters():,}); device {device}, dtype {dtype}")

    max_length = cfg.max_length or stage.max_length
    ds = build_dataset(cfg, tok, mcfg, max_length)
    lr = cfg.lr if cfg.lr is not None else stage.lr
    min_lr = cfg.min_lr if cfg.min_lr is not None else (lr / 10 if cfg.lr is not None else stage.min_lr)

    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type == "cuda"
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay,
                            **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())

    ddp_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=mcfg.use_moe)

    sampler = StepSampler(len(ds), cfg.batch_size, cfg.grad_accum, dist.world, dist.rank, cfg.seed)
    steps_per_epoch = sampler.steps_per_epoch()
    total_steps = cfg.max_steps or steps_per_epoch * cfg.epochs

    # ---- resume ----
    step, epoch, consumed = 0, 0, 0
    skipped_total, bad_steps_total = Counter(), 0
    resume = cfg.resume
    if resume == "auto":
        found = ckpt.latest_valid(out, warn=log)
        resume = str(found) if found else None
        if resume is None:
            log(f"--resume auto: no checkpoint in {out}, starting the run")
    if resume:
        st = ckpt.load_checkpoint(resume, model, opt, scaler)
        step, epoch, consumed = st["step"], st["epoch"], st["consumed"]
        skipped_total = Counter(st.get("skipped", {}))
        bad_steps_total = st.get("bad_steps", 0)
        g = sampler.global_batch
        if st.get("world", 1) != dist.world or st.get("global_batch", g) != g:
            aligned = (consumed // g) * g
            log(f"resuming with world size {dist.world} (was {st.get('world')}), global batch {g} "
                f"(was {st.get('global_batch')}): continuing at row {aligned} of epoch {epoch}"
                + (f" ({consumed - aligned} rows will be seen again)" if aligned != consumed else ""))
            consumed = aligned
        ckpt.set_rng_state(st["rng"])
        log(f"resumed from {resume} at step {step} (epoch {epoch}, row {consumed})")

    metrics = MetricsLog(out / "metrics.jsonl", cfg.logger, f"{stage.name}", cfg.to_json(), enabled=dist.main)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_json(), indent=2))
    peak = measure_peak(device, dtype if dtype != torch.float16 else torch.float16) if dist.main else 0.0

    def state_dict_extra():
        return {"epoch": epoch, "consumed": consumed, "world": dist.world, "global_batch": sampler.global_batch,
                "skipped": dict(skipped_total), "bad_steps": bad_steps_total, "config": cfg.to_json(),
                "total_steps": total_steps}

    def save_ck():
        if dist.main:
            p = ckpt.save_checkpoint(out, step, model, opt, scaler, state_dict_extra(), cfg.keep_last)
            log(f"checkpoint written: {p}")

    bar = None
    if cfg.progress and dist.main:
        from tqdm import tqdm
        bar = tqdm(total=total_steps, initial=step, desc=stage.name, unit="step", dynamic_ncols=True)

    ddp_model.train()
    window = {"loss": torch.zeros((), device=device), "n": 0, "samples": 0, "real": 0, "tokens": 0,
              "labels": 0, "images": 0, "t0": time.perf_counter(), "steps": 0, "len_sum": 0.0}
    bad_in_row = 0
    last_loss = float("nan")
    stopped_by_signal = False
    with _Stop() as stopper:
        while step < total_steps:
            sampler.epoch, sampler.start = epoch, consumed
            loader = torch.utils.data.DataLoader(
                ds, batch_sampler=sampler, collate_fn=Collator(tok.pad_id, cfg.padding, max_length),
                num_workers=cfg.num_workers, pin_memory=device.type == "cuda",
                persistent_workers=False, worker_init_fn=_worker_init if cfg.num_workers else None,
                generator=torch.Generator().manual_seed(cfg.seed + epoch))
            micro = 0
            step_loss = torch.zeros((), device=device)
            for batch in loader:
                skipped_total.update(batch.skipped)
                batch.to(device, non_blocking=True)
                last_micro = micro == cfg.grad_accum - 1
                sync_ctx = ddp_model.no_sync() if (dist.enabled and not last_micro) else contextlib.nullcontext()
                with sync_ctx:
                    with autocast:
                        if batch.input_ids.shape[0] == 0:      # every row of this micro-batch was bad
                            loss = sum(p.sum() for p in params) * 0.0
                        else:
                            o = ddp_model(batch.input_ids, labels=batch.labels, pixel_values=batch.pixel_values,
                                          position_ids=batch.position_ids, seq_ids=batch.seq_ids)
                            loss = o.loss + (o.aux_loss if o.aux_loss is not None else 0.0)
                    scaled = loss / cfg.grad_accum
                    (scaler.scale(scaled) if scaler else scaled).backward()
                step_loss += loss.detach().float() / cfg.grad_accum
                window["samples"] += batch.n_samples
                window["real"] += batch.n_real_tokens
                window["tokens"] += batch.n_tokens
                window["images"] += 0 if batch.pixel_values is None else batch.pixel_values.shape[0]
                window["len_sum"] += batch.n_real_tokens / max(1, batch.n_samples) * batch.n_samples
                micro += 1
                if micro < cfg.grad_accum:
                    continue
                micro = 0
                consumed += sampler.global_batch
                # ---- optimizer step ----
                finite = torch.isfinite(step_loss)
                if dist.enabled:
                    finite = all_reduce_sum(finite.float()) == dist.world
                if not bool(finite):
                    bad_in_row += 1
                    bad_steps_total += 1
                    opt.zero_grad(set_to_none=True)
                    log(f"non-finite loss at step {step}: update skipped ({bad_in_row} in a row)")
                    if bad_in_row >= cfg.max_bad_steps:
                        raise RuntimeError(f"{bad_in_row} non-finite losses in a row: aborting (lower the lr, "
                                           f"check the data, or raise --max-bad-steps)")
                else:
                    bad_in_row = 0
                    cur_lr = cosine_lr(step, total_steps, lr, min_lr, cfg.warmup_steps)
                    for gp in opt.param_groups:
                        gp["lr"] = cur_lr
                    if scaler:
                        scaler.unscale_(opt)
                    if cfg.grad_clip:
                        torch.nn.utils.clip_grad_norm_(params, cfg.grad_clip)
                    if scaler:
                        scaler.step(opt)
                        scaler.update()
                    else:
                        opt.step()
                    opt.zero_grad(set_to_none=True)
                    window["loss"] += step_loss
                    window["n"] += 1
                step += 1
                window["steps"] += 1
                step_loss = torch.zeros((), device=device)
                if bar is not None:
                    bar.update(1)
                if step % cfg.log_every == 0 or step == total_steps:
                    last_loss = _log_window(window, step, total_steps, epoch, cfg, mcfg, peak, metrics,
                                            bar, log, skipped_total, dist, opt, model)
                if cfg.save_every and step % cfg.save_every == 0 and step < total_steps:
                    save_ck()
                if stopper.flag:
                    stopped_by_signal = True
                    break
                if step >= total_steps:
                    break
            else:                       # the epoch's data ran out: next epoch
                epoch, consumed = epoch + 1, 0
                continue
            break
    if bar is not None:
        bar.close()
    if stopped_by_signal:
        log("stop signal received: writing a checkpoint and exiting")
        save_ck()
        cleanup()
        return {"stopped": True, "step": step}
    if window["steps"]:
        last_loss = _log_window(window, step, total_steps, epoch, cfg, mcfg, peak, metrics, bar, log,
                                skipped_total, dist, opt, model)
    summary = {"stage": stage.name, "steps": step, "final_loss": last_loss, "skipped": dict(skipped_total),
               "bad_steps": bad_steps_total, "out": str(out)}
    if dist.main:
        if cfg.save_every:
            save_ck()
        if cfg.save_final:
            summary["model"] = str(save_model(model, out / "model", tok))
            log(f"model folder written: {summary['model']}")
        if cfg.plot:
            recs = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
            plot_curves({stage.name: [(r["step"], r["loss"]) for r in recs]}, out / "loss.png",
                        title=f"{stage.name} loss")
        if skipped_total:
            log("skipped rows by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped_total.items())))
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    metrics.close()
    cleanup()
    return summary


def _worker_init(worker_id: int) -> None:
    import random

    import numpy as np
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)


def _log_window(w, step, total, epoch, cfg, mcfg, peak, metrics, bar, log, skipped, dist, opt, model):
    dt = time.perf_counter() - w["t0"]
    stats = torch.tensor([w["samples"], w["real"], w["tokens"], w["images"]], dtype=torch.float64)
    if dist.enabled:
        stats = all_reduce_sum(stats)
    samples, real, tokens, images = stats.tolist()
    loss = float(w["loss"] / max(1, w["n"])) if w["n"] else float("nan")    # the only host sync per window
    steps = max(1, w["steps"])
    mean_len = real / max(1.0, samples)
    flops = train_flops(mcfg, int(real), int(real * 0.3), mean_len, int(images), model.vision_trainable)
    rec = {"step": step, "epoch": epoch, "loss": round(loss, 5), "lr": opt.param_groups[0]["lr"],
           "step_time_s": round(dt / steps, 4), "samples_per_s": round(samples / dt, 2),
           "real_tokens_per_s": round(real / dt, 1), "tokens_per_s": round(tokens / dt, 1),
           "pad_fraction": round(1 - real / max(1.0, tokens), 3),
           "mfu": round(flops / dt / peak / dist.world, 4) if peak else None,
           "skipped": sum(skipped.values())}
    metrics.log(rec)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['real_tokens_per_s']:.0f}")
    elif dist.main:
        log(json.dumps(rec))
    if skipped and dist.main and bar is None:
        log("skipped so far: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items())))
    w.update(loss=torch.zeros_like(w["loss"]), n=0, samples=0, real=0, tokens=0, labels=0, images=0,
             t0=time.perf_counter(), steps=0, len_sum=0.0)
    return loss
