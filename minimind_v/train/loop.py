"""One training loop for every stage.

A stage (stages.py) only decides what is trainable, the default lr / max length and which reader
parses the data; everything else is shared: AdamW with cosine decay to min_lr (after optional linear
warm-up), gradient accumulation (DDP all-reduce only on the last micro-step), grad clipping, bf16
autocast on GPU (fp16 with a GradScaler when bf16 is unavailable), bad rows skipped and counted,
non-finite losses skipped, metrics logged every `log_every` optimizer steps with loss, lr, step time,
samples/s, real (non-pad) tokens/s and MFU, checkpoints every `save_every` steps and on SIGTERM/SIGINT,
and the final model folder written to OUT/model.

Resume is exact on the CPU: a checkpoint (checkpoint.py) holds the step, the position in the data
(epoch, rows consumed: sampler.py) and every process's RNG state, the lr is a function of the step, and
rows draw their random numbers from (seed, epoch, row). Under torchrun every collective (the per-step
"finite loss / stop requested" all-reduce, the metric sums, the skip-count and RNG gathers at log and
save time) happens at the same step on every rank, so a stop signal or a NaN never leaves a rank waiting.

`train()` reads top to bottom: `build_parts` (build.py) makes what does not change (Parts: model,
optimizer, data), `start_or_resume` (resume.py) the state that does (Run: step, position in the data,
counts), `_open_outputs` the logs; the step loop is `_train_epoch` (micro-batches -> `_forward_backward`,
then `_optimizer_step`), with the numbers of the current log interval in a `Window` (metrics.py);
`_finish` writes the model folder and summary. Every setting is a TrainConfig field (config.py).

    from minimind_v import TrainConfig
    from minimind_v.train.loop import train
    train(TrainConfig(stage="vlm-sft", data=["sft.parquet"], out="runs/sft", init_from="runs/pt/model"))
"""
from __future__ import annotations

import contextlib
import json
import math
import signal

import torch

from ..formats.folder import save_model
from ..hub import CLI_INPUTS, resolve_fields
from .build import NoUsableData, Parts, build_parts, seed_all
from .config import TrainConfig
from .distributed import all_reduce_sum, cleanup
from .flops import measure_peak
from .metrics import MetricsLog, Window, drop_metrics_after, log_window, plot_curves, read_metrics
from .resume import Run, save_run_checkpoint, skipped_totals, start_or_resume
from .sampler import SeededRows, StepSampler

__all__ = ["NonFiniteLoss", "NoUsableData", "TrainConfig", "train"]


class NonFiniteLoss(RuntimeError):
    """Too many non-finite losses in a row: the run is diverging or the data is broken."""
    exit_code = 3        # the command line's exit status for it


def train(cfg: TrainConfig) -> dict:
    """Run one stage. Returns a summary dict (final loss, steps, skipped rows, model folder...)."""
    cfg = resolve_fields(cfg, CLI_INPUTS["train"])  # Hub ids among --from, --data, ... -> local paths (hub.py)
    p = build_parts(cfg)
    run = start_or_resume(p)
    _open_outputs(p, run)
    p.ddp_model.train()
    window = Window(torch.zeros((), device=p.device))
    with _Stop() as stopper:
        while run.step < run.total_steps:
            if stopper.flag and not p.dist.enabled:
                run.stopped = True
                break
            ran_out, batches = _train_epoch(p, run, window, stopper)
            if not ran_out:             # the run is done or was stopped
                break
            if batches == 0 and run.consumed == 0:
                # never spin: a whole epoch that yields nothing cannot advance the run. (A resume at the
                # very end of an epoch also yields nothing, legitimately: consumed > 0, next epoch.)
                raise NoUsableData(f"epoch {run.epoch} produced no batch from {len(p.ds)} row(s); nothing to "
                                   f"train on")
            run.epoch, run.consumed = run.epoch + 1, 0
    return _finish(p, run, window)


def _train_epoch(p: Parts, run: Run, window: Window, stopper) -> tuple[bool, int]:
    """Optimizer steps over one epoch's data, from row `run.consumed` of its order. Returns (the data ran
    out, batches read); it stops early when the run reaches its last step or a stop signal arrives."""
    cfg, dist = p.cfg, p.dist
    p.sampler.epoch, p.sampler.start = run.epoch, run.consumed
    loader = make_loader(p.ds, p.sampler, p.collate, cfg.seed, run.epoch, cfg.num_workers, p.device)
    micro, batches, step_rows = 0, 0, []
    step_loss = torch.zeros((), device=p.device)
    for batch in loader:
        batches += 1
        if stopper.flag and micro and not dist.enabled:
            # a stop signal in the middle of gradient accumulation: drop the partial step (its rows are
            # not counted as consumed, so a resume trains this step whole) and stop now
            p.opt.zero_grad(set_to_none=True)
            run.stopped = True
            return False, batches
        run.skipped_local.update(batch.skipped)
        if p.trace is not None:
            step_rows += batch.indices
        batch.to(p.device, non_blocking=True)
        loss = _forward_backward(p, batch, last_micro=micro == cfg.grad_accum - 1)
        step_loss += loss.detach().float() / cfg.grad_accum
        window.add_batch(batch)
        micro += 1
        if micro < cfg.grad_accum:
            continue
        # ---- one optimizer step ----
        micro = 0
        run.consumed += p.sampler.global_batch
        stop_requested = _optimizer_step(p, run, window, step_loss, stopper)
        run.step += 1
        window.steps += 1
        step_loss = torch.zeros((), device=p.device)
        if p.trace is not None:
            p.trace.write(json.dumps({"step": run.step, "epoch": run.epoch, "rank": dist.rank, "rows": step_rows})
                          + "\n")
            p.trace.flush()
        step_rows = []
        if p.bar is not None:
            p.bar.update(1)
        if run.step % cfg.log_every == 0 or run.step == run.total_steps:
            run.last_loss = log_window(window, p, run, skipped_totals(p, run))
        if cfg.eval_every and run.step % cfg.eval_every == 0:         # a benchmark score beside the loss
            from ..eval.bench import log_during_training
            log_during_training(p, run)
        if cfg.save_every and run.step % cfg.save_every == 0 and run.step < run.total_steps:
            save_run_checkpoint(p, run)
        if stop_requested:
            run.stopped = True
            return False, batches
        if run.step >= run.total_steps:
            return False, batches
    return True, batches


def _forward_backward(p: Parts, batch, last_micro: bool) -> torch.Tensor:
    """One micro-batch: forward (through the encoder cache when there is one), backward. Returns the loss."""
    cfg = p.cfg
    # gradient accumulation: DDP all-reduces only on the last micro-step
    sync_ctx = p.ddp_model.no_sync() if (p.dist.enabled and not last_micro) else contextlib.nullcontext()
    with sync_ctx:
        with p.autocast:
            if batch.input_ids.shape[0] == 0:      # every row of this micro-batch was bad
                loss = _zero_loss(p.ddp_model, p.tok, p.device)
            else:
                pv, feats = batch.pixel_values, None
                if p.enc_cache is not None and pv is not None:
                    pv, feats = None, p.enc_cache.features(p.model, pv, batch.image_keys)
                o = p.ddp_model(batch.input_ids, labels=batch.labels, pixel_values=pv, vision_features=feats,
                                position_ids=batch.position_ids, seq_ids=batch.seq_ids, label_index=batch.label_index)
                loss = o.loss + (o.aux_loss if o.aux_loss is not None else 0.0)
        scaled = loss / cfg.grad_accum
        (p.scaler.scale(scaled) if p.scaler else scaled).backward()
    return loss


def _optimizer_step(p: Parts, run: Run, window: Window, step_loss: torch.Tensor, stopper) -> bool:
    """Update the weights, or skip a non-finite step. One collective decides "finite on every rank" and
    "stop requested" (the one host sync per optimizer step). Returns whether a stop was requested."""
    cfg = p.cfg
    flags = torch.stack([torch.isfinite(step_loss).float(), torch.tensor(float(stopper.flag), device=p.device)])
    if p.dist.enabled:
        all_reduce_sum(flags)
    finite_ranks, stop_ranks = flags.tolist()
    if finite_ranks < p.dist.world:
        run.bad_in_row += 1
        run.bad_steps += 1
        p.opt.zero_grad(set_to_none=True)
        p.log(f"warning: non-finite loss at step {run.step + 1}: update skipped ({run.bad_in_row} in a row, "
              f"{run.bad_steps} in the run)")
        if run.bad_in_row >= cfg.max_bad_steps:
            raise NonFiniteLoss(
                f"{run.bad_in_row} non-finite losses in a row (step {run.step + 1}): aborting. Lower the lr, "
                f"check the data, or raise --max-bad-steps; --resume auto continues from the last checkpoint")
        return bool(stop_ranks)
    run.bad_in_row = 0
    cur_lr = cosine_lr(run.step, run.total_steps, p.lr, p.min_lr, cfg.warmup_steps)
    for gp in p.opt.param_groups:
        gp["lr"] = cur_lr
    if p.scaler:
        p.scaler.unscale_(p.opt)
    if cfg.grad_clip:
        torch.nn.utils.clip_grad_norm_(p.params, cfg.grad_clip)
    if p.scaler:
        p.scaler.step(p.opt)
        p.scaler.update()
    else:
        p.opt.step()
    p.opt.zero_grad(set_to_none=True)
    window.loss += step_loss
    window.n += 1
    return bool(stop_ranks)


def cosine_lr(step: int, total: int, lr: float, min_lr: float, warmup: int) -> float:
    if warmup and step < warmup:
        return lr * (step + 1) / warmup
    t = min(1.0, (step - warmup) / max(1, total - warmup))
    return min_lr + 0.5 * (lr - min_lr) * (1 + math.cos(math.pi * t))


def _open_outputs(p: Parts, run: Run) -> None:
    """Metrics log, train_config.json, the hardware peak for MFU, the row trace and the progress bar."""
    cfg, dist, out = p.cfg, p.dist, p.out
    p.metrics = MetricsLog(out / "metrics.jsonl", cfg.logger, f"{p.stage.name}", cfg.to_json(), enabled=dist.main)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_json(), indent=2))
        drop_metrics_after(out / "metrics.jsonl", run.step)      # steps to be trained (again) from here
        with torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []):   # no RNG draw leaks
            p.peak = measure_peak(p.device, p.dtype)
    if cfg.trace_rows:
        out.mkdir(parents=True, exist_ok=True)
        p.trace = open(out / f"rows-rank{dist.rank}.jsonl", "a")
    if cfg.progress and dist.main:
        from tqdm import tqdm
        p.bar = tqdm(total=run.total_steps, initial=run.step, desc=p.stage.name, unit="step", dynamic_ncols=True)


def _finish(p: Parts, run: Run, window: Window) -> dict:
    """After the last step: the final log line, checkpoint, model folder, loss plot and summary; after a
    stop signal only a checkpoint."""
    cfg, dist, out, log = p.cfg, p.dist, p.out, p.log
    if p.bar is not None:
        p.bar.close()
    if p.trace is not None:
        p.trace.close()
    if run.stopped:
        log(f"stop signal received: writing a checkpoint at step {run.step} and exiting "
            f"(continue with --resume auto)")
        save_run_checkpoint(p, run)
        p.metrics.close()
        cleanup()
        return {"stopped": True, "step": run.step, "out": str(out)}
    if window.steps:
        run.last_loss = log_window(window, p, run, skipped_totals(p, run))
    skipped = skipped_totals(p, run)
    summary = {"stage": p.stage.name, "steps": run.step, "final_loss": run.last_loss, "skipped": dict(skipped),
               "bad_steps": run.bad_steps, "out": str(out)}
    if cfg.save_every:
        save_run_checkpoint(p, run)
    if dist.main:
        if cfg.save_final:
            if p.peft_model is not None:
                from .lora import save_adapter
                summary["model"] = str(save_adapter(p.peft_model, out / "model", p.tok, cfg.init_from))
            else:
                summary["model"] = str(save_model(p.model, out / "model", p.tok))
            log(f"model folder written: {summary['model']}")
        if cfg.plot:
            recs = [r for r in read_metrics(out / "metrics.jsonl") if "loss" in r]
            plot_curves({p.stage.name: [(r["step"], r["loss"]) for r in recs]}, out / "loss.png",
                        title=f"{p.stage.name} loss")
        log("skipped rows by kind: " + (", ".join(f"{k}={v}" for k, v in sorted(skipped.items())) or "none")
            + f" ({sum(skipped.values())} in all); non-finite steps skipped: {run.bad_steps}")
        (out / "summary.json").write_text(json.dumps(summary, indent=2))
    p.metrics.close()
    cleanup()
    return summary


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


def make_loader(ds, sampler: StepSampler, collate, seed: int, epoch: int, num_workers: int, device):
    """The DataLoader for one epoch from the sampler's position. Rows are read through `SeededRows`, so
    any random draw a row makes depends on (seed, epoch, row) only, whichever worker reads it; the
    workers' own base seed comes from `seed + epoch` (stored in checkpoints as `loader_seed`)."""
    return torch.utils.data.DataLoader(
        SeededRows(ds, seed, epoch), batch_sampler=sampler, collate_fn=collate, num_workers=num_workers,
        pin_memory=device.type == "cuda", persistent_workers=False,
        worker_init_fn=_worker_init if num_workers else None,
        generator=torch.Generator().manual_seed(seed + epoch))


def _worker_init(worker_id: int) -> None:
    seed_all(torch.initial_seed() % 2**63)       # torch seeds each worker with base_seed + worker_id


def _zero_loss(ddp_model, tok, device) -> torch.Tensor:
    """A zero loss that still runs the model (a 2-token dummy row), for a micro-batch whose rows were all
    skipped: every rank must run forward and backward so that DDP's all-reduce stays in step."""
    ids = torch.tensor([[tok.bos_id, tok.eos_id]], device=device)
    return ddp_model(ids, labels=ids.clone()).loss * 0.0

