"""Where a run is (Run) and how it goes on from a checkpoint: what a checkpoint saves beyond the weights
(step, position in the data, skip counts, every process's RNG state, the settings) and what a resume
restores. The file format itself (atomic writes, checksums, which checkpoint is newest) is checkpoint.py.

A resumed CPU run matches an uninterrupted one: the step fixes the lr, (epoch, rows consumed) the data
position, and each rank takes back its generator states. With another world size the run is recounted so
it ends at the same place in the data, and the generators are reseeded from (seed, step, rank). A setting
changed since the checkpoint (TrainConfig fields marked `resume`) is warned about.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from dataclasses import dataclass, field

from . import checkpoint as ckpt
from .build import Parts, seed_all
from .config import changes_on_resume
from .distributed import gather_objects
from .sampler import row_seed


@dataclass
class Run:
    """Where the run is: what a checkpoint saves and a resume restores, plus how it ended."""
    total_steps: int
    step: int = 0
    epoch: int = 0
    consumed: int = 0            # rows of this epoch's order already trained on (all ranks)
    bad_in_row: int = 0
    bad_steps: int = 0
    skipped_base: Counter = field(default_factory=Counter)    # before the resume (all ranks)
    skipped_local: Counter = field(default_factory=Counter)   # this process since
    last_loss: float = float("nan")
    stopped: bool = False        # by a signal: a checkpoint is written and the run exits


def start_or_resume(p: Parts) -> Run:
    """A fresh Run, or the one a checkpoint saved (--resume): weights, optimizer, position, RNG states."""
    cfg, dist, out, log = p.cfg, p.dist, p.out, p.log
    run = Run(total_steps=cfg.max_steps or p.sampler.steps_per_epoch() * cfg.epochs)
    found = find_resume(cfg.resume, out, dist, log)
    if cfg.resume == "auto" and found is None:
        log(f"--resume auto: no checkpoint in {out / 'checkpoints'} yet, starting the run")
    if not found:
        return run
    st = ckpt.load_checkpoint(found, p.model, p.opt, p.scaler, verified=True)   # find_resume verified it
    run.step, run.epoch, run.consumed = st["step"], st["epoch"], st["consumed"]
    run.bad_in_row, run.bad_steps = st.get("bad_in_row", 0), st.get("bad_steps", 0)
    if dist.main:
        run.skipped_base = Counter(st.get("skipped", {}))
    run.total_steps = resumed_total(cfg, st, p.sampler, run.step, run.epoch, run.consumed, run.total_steps, log)
    restore_rng(st.get("rng"), cfg.seed, run.step, dist, log)
    for change in changes_on_resume(st.get("config", {}), cfg):
        log(f"warning: resuming with a changed setting, the run will not match an uninterrupted one: {change}")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        for moved in ckpt.set_aside_newer(out, run.step):
            log(f"checkpoint newer than the resume point set aside: {moved}")
    log(f"resumed from {found} at step {run.step} of {run.total_steps} (epoch {run.epoch}, {run.consumed} of "
        f"{len(p.ds)} rows consumed)")
    return run


def find_resume(resume, out: Path, dist, log) -> str | None:
    """Rank 0 picks the checkpoint (verifying checksums once) and every rank gets its answer, error included."""
    found, err = None, None
    if dist.main:
        try:
            p = ckpt.resolve_resume(resume, out, warn=log)
            found = str(p) if p else None
        except (OSError, ValueError) as e:
            err = e
    found, err = gather_objects((found, err))[0]
    if err is not None:
        raise err
    return found


def resumed_total(cfg, st, sampler, step, epoch, consumed, total, log) -> int:
    """Total optimizer steps after a resume. With another world size (so another global batch) an
    epoch-based run is recounted so that it still ends at the same place in the data."""
    g, old_g = sampler.global_batch, st.get("global_batch", sampler.global_batch)
    old_world = st.get("world", 1)
    if old_g == g and old_world == sampler.world:
        return total
    if cfg.max_steps:
        new_total = cfg.max_steps
        note = f"--max-steps {cfg.max_steps} now counts steps of {g} rows"
    else:
        new_total = step + sampler.steps_left(consumed) + (cfg.epochs - 1 - epoch) * sampler.steps_per_epoch()
        note = f"the run still ends after {cfg.epochs} epoch(s)"
    log(f"world size {old_world} -> {sampler.world}, global batch {old_g} -> {g} rows: continuing at row "
        f"{consumed} of epoch {epoch}'s order (no row repeated or skipped); {note}: {new_total - step} "
        f"step(s) left, {new_total} in all")
    return new_total


def restore_rng(rngs, seed: int, step: int, dist, log) -> None:
    """Each rank takes back its own generator states; with another world size there is no state to take
    back for some ranks, so every rank is reseeded from (seed, step, rank) instead."""
    if isinstance(rngs, dict):
        rngs = [rngs]
    if rngs and len(rngs) == dist.world:
        ckpt.set_rng_state(rngs[dist.rank])
        return
    seed_all(row_seed(seed, step, dist.rank))
    log(f"RNG states were saved for {len(rngs or [])} process(es), this run has {dist.world}: generators "
        f"reseeded from (seed, step, rank)")


def skipped_totals(p: Parts, run: Run) -> Counter:
    """Skipped rows by kind over all ranks and the run before any resume (a collective call)."""
    total = Counter(run.skipped_base)
    for c in gather_objects(dict(run.skipped_local)):
        total.update(c)
    return total


def save_run_checkpoint(p: Parts, run: Run) -> None:
    """A collective call: every rank hands over its RNG state and skip counts, rank 0 writes."""
    cfg = p.cfg
    rngs = gather_objects(ckpt.rng_state())
    extra = {"epoch": run.epoch, "consumed": run.consumed, "world": p.dist.world,
             "global_batch": p.sampler.global_batch, "total_steps": run.total_steps,
             "skipped": dict(skipped_totals(p, run)), "bad_steps": run.bad_steps, "bad_in_row": run.bad_in_row,
             "loader_seed": cfg.seed + run.epoch, "row_seed": "row_seed(seed, epoch, row) (train/sampler.py)",
             "config": cfg.to_json()}
    if p.dist.main:
        path = ckpt.save_checkpoint(p.out, run.step, p.model, p.opt, p.scaler, extra, cfg.keep_last, rng=rngs)
        p.log(f"checkpoint written: {path}")

