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

`train()` reads top to bottom: `_setup` builds what does not change (Parts: model, optimizer, data),
`_resume` the state that does (Run: step, position in the data, counts), `_open_outputs` the logs; the
step loop is `_train_epoch` (micro-batches -> `_forward_backward`, then `_optimizer_step`), with the
numbers of the current log interval in a `Window`; `_finish` writes the model folder and summary.

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

from ..config import ModelConfig, preset, torch_device, torch_dtype
from ..data.collate import Collator
from ..data.parquet import VLMDataset
from ..data.text import TextDataset
from ..formats.load import load_model
from ..formats.folder import save_model
from ..model.vlm import MiniMindVLM
from ..tokenizer import Tokenizer
from . import checkpoint as ckpt
from .distributed import Dist, all_reduce_sum, cleanup, gather_objects, setup
from .flops import flops_breakdown, measure_peak, trainable_fraction
from .metrics import MetricsLog, plot_curves, read_metrics
from .sampler import SeededRows, StepSampler, row_seed
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
    trace_rows: bool = False              # write OUT/rows-rank<R>.jsonl: the rows each optimizer step trained on
    encoder_cache: str | None = None      # folder caching frozen-encoder outputs by image hash (train/encoder_cache.py)
    augment: float = 0.0                  # random zoom / shift / light on training pictures (data/augment.py); 0: off
    think_block: bool = False
    control_tokens_in_text: bool = False  # trusted data: control-token strings in the text stay control tokens
    lora_rank: int = 0                    # > 0: train a LoRA adapter on init_from with PEFT (train/lora.py)
    lora_alpha: float | None = None       # default 2 x rank
    lora_dropout: float = 0.0
    lora_targets: str = "all"             # all | attn | mlp | comma list of q_proj,...,down_proj
    lora_projector: str = "auto"          # auto (as the stage) | train | freeze
    progress: bool = True
    save_final: bool = True
    plot: bool = True

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))     # paths -> strings


def build_model(cfg: TrainConfig, tok: Tokenizer, log) -> MiniMindVLM:
    if cfg.init_from:
        model = load_model(cfg.init_from)   # with its encoder: the folder saved at the end keeps it
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


def check_data_files(files: list[str]) -> None:
    """What can be known about the data without a tokenizer or model, checked before either is built (so
    a wrong file fails in seconds): every file exists and is readable, parquet files have a
    `conversations` column, and there is at least one row."""
    rows = 0
    for f in files:
        if not Path(f).exists():
            raise FileNotFoundError(f"data file {f} does not exist")
        if f.endswith(".parquet"):
            import pyarrow as pa
            import pyarrow.parquet as pq
            try:
                pf = pq.ParquetFile(f)
                names = pf.schema_arrow.names
            except (OSError, pa.ArrowException) as e:
                raise NoUsableData(f"{f} is not a readable parquet file: {e}") from None
            if "conversations" not in names:
                raise NoUsableData(f"{f} has no `conversations` column (it has: {', '.join(names) or 'none'}); "
                                   f"nothing to train on")
            rows += pf.metadata.num_rows
        elif f.endswith((".jsonl", ".json")):
            with open(f, "rb") as fh:
                rows += any(line.strip() for line in fh)       # stops at the first non-blank line
    if rows == 0:
        raise NoUsableData(f"the data ({', '.join(files)}) has zero rows: nothing to train on")


def build_dataset(cfg: TrainConfig, tok: Tokenizer, mcfg: ModelConfig, max_length: int):
    files = [str(f) for f in cfg.data]
    check_data_files(files)
    if all(f.endswith(".parquet") for f in files):
        return VLMDataset(files, tok, mcfg, max_length, think_block=cfg.think_block,
                          image_keys=bool(cfg.encoder_cache), augment=cfg.augment,
                          control_tokens_in_text=cfg.control_tokens_in_text)
    if all(f.endswith((".jsonl", ".json")) for f in files):
        return TextDataset(files, tok, max_length, mcfg.image_token_len,
                           control_tokens_in_text=cfg.control_tokens_in_text)
    raise ValueError("data files must be all .parquet or all .jsonl")


class NoUsableData(ValueError):
    """The data holds no row training could use: stopping before step 1 (no model folder is written)."""


def first_usable_row(ds, log) -> int:
    """Read rows in file order until one is usable, before any step is taken: a data set with zero rows, or
    with only bad ones, stops here with the skip counts, instead of 'training' on nothing (and, with zero
    rows, instead of a sampler that yields no batch). Costs one row on good data."""
    from ..data.parquet import Skipped
    if len(ds) == 0:
        raise NoUsableData("the data has zero rows: nothing to train on")
    kinds = Counter()
    for i in range(len(ds)):
        item = ds[i]
        if not isinstance(item, Skipped):
            if kinds:
                log(f"the first {i} row(s) are unusable ({_kinds_text(kinds)}); training skips such rows")
            return i
        kinds[item.kind] += 1
    raise NoUsableData(f"none of the {len(ds)} row(s) is usable, skipped by kind: {_kinds_text(kinds)}; "
                       f"`minimind-v data check FILE` lists every problem")


def _kinds_text(kinds: Counter) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))


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


@dataclass
class Parts:
    """What setup builds once and the step loop uses: the model, its optimizer, the data, the outputs."""
    cfg: TrainConfig
    out: Path
    dist: Dist
    device: torch.device
    log: object                  # print on rank 0, nothing elsewhere
    stage: object
    tok: Tokenizer
    model: MiniMindVLM
    ddp_model: torch.nn.Module   # the model, wrapped by DDP under torchrun
    peft_model: object
    dtype: torch.dtype
    autocast: object
    ds: object
    sampler: StepSampler
    params: list
    opt: torch.optim.Optimizer
    scaler: object
    lr: float
    min_lr: float
    enc_cache: object = None
    metrics: MetricsLog | None = None
    peak: float = 0.0
    trace: object = None         # OUT/rows-rank<R>.jsonl with --trace-rows
    bar: object = None           # tqdm on rank 0 with progress
    collate: Collator | None = None


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


@dataclass
class Window:
    """Sums over the optimizer steps since the last log line (this process's share)."""
    loss: torch.Tensor           # sum of the finite steps' losses, kept on the device (no host sync)
    n: int = 0                   # finite steps
    samples: int = 0
    real: int = 0                # non-pad tokens
    tokens: int = 0
    labels: int = 0
    images: int = 0
    len_sum: float = 0.0         # sum of squared row lengths (attention FLOPs)
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add_batch(self, batch) -> None:
        self.samples += batch.n_samples
        self.real += batch.n_real_tokens
        self.tokens += batch.n_tokens
        self.images += 0 if batch.pixel_values is None else batch.pixel_values.shape[0]
        self.len_sum += batch.sum_sq_len
        self.labels += batch.n_label_tokens

    def reset(self) -> None:
        self.loss = torch.zeros_like(self.loss)
        self.n = self.samples = self.real = self.tokens = self.labels = self.images = self.steps = 0
        self.len_sum = 0.0
        self.t0 = time.perf_counter()


def train(cfg: TrainConfig) -> dict:
    """Run one stage. Returns a summary dict (final loss, steps, skipped rows, model folder...)."""
    p = _setup(cfg)
    run = _resume(p)
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
            run.last_loss = _log_window(window, p, run, _skipped_totals(p, run))
        if cfg.save_every and run.step % cfg.save_every == 0 and run.step < run.total_steps:
            _save_checkpoint(p, run)
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


def _setup(cfg: TrainConfig) -> Parts:
    """Tokenizer, model, data, optimizer and sampler; every refusal (bad settings, no data) comes here,
    before anything is written."""
    if cfg.encoder_cache and cfg.augment:    # refused before any work is done
        raise ValueError("--encoder-cache keeps one encoding per picture, --augment changes the picture every "
                         "epoch: use one or the other")
    device = torch_device(cfg.device)
    dist = setup(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    log = (lambda msg: print(f"[train] {msg}", flush=True)) if dist.main else (lambda msg: None)
    stage = get_stage(cfg.stage)
    _seed_all(cfg.seed)                   # the same initial weights on every rank

    check_data_files([str(f) for f in cfg.data])   # zero rows, a missing column: refused before any model is built
    tok_dir = cfg.tokenizer or cfg.init_from
    if tok_dir is None:
        raise ValueError("give a tokenizer folder (--tokenizer) or a model folder to start from (--from)")
    tok = Tokenizer.load(tok_dir)
    model = build_model(cfg, tok, log)
    mcfg = model.cfg
    prefixes = TRAINABLE_CHOICES[cfg.trainable] if cfg.trainable else stage.trainable
    n_train = set_trainable(model, prefixes, cfg.unfreeze_vision)
    peft_model = None
    if cfg.lora_rank:                     # PEFT injects its layers into `model` in place; the loop is unchanged
        from .lora import apply_lora
        peft_model = apply_lora(model, cfg, prefixes, log)
        n_train = sum(p.numel() for p in model.parameters() if p.requires_grad)
    _seed_all(cfg.seed + dist.rank)       # training randomness (dropout...) differs between ranks
    dtype = torch_dtype(cfg.dtype, device)
    model.to(device)
    log(f"stage {stage.name}: {n_train:,} trainable of {model.num_parameters(include_vision=True):,} parameters "
        f"(LLM+projector {model.num_parameters():,}); device {device}, dtype {dtype}")

    max_length = cfg.max_length or stage.max_length
    ds = build_dataset(cfg, tok, mcfg, max_length)
    first_usable_row(ds, log)            # refuses empty / all-bad data before anything is written
    lr = cfg.lr if cfg.lr is not None else stage.lr
    min_lr = cfg.min_lr if cfg.min_lr is not None else (lr / 10 if cfg.lr is not None else stage.min_lr)

    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.type in ("cuda", "cpu")     # one pass over each tensor; 6x faster than foreach on CPU
    opt = torch.optim.AdamW(params, lr=lr, betas=(0.9, 0.95), weight_decay=cfg.weight_decay,
                            **({"fused": True} if fused else {}))
    scaler = torch.amp.GradScaler("cuda") if dtype == torch.float16 else None
    autocast = (torch.autocast(device_type=device.type, dtype=dtype) if dtype != torch.float32
                else contextlib.nullcontext())
    enc_cache = None
    if cfg.encoder_cache:
        from .encoder_cache import EncoderCache
        enc_cache = EncoderCache(cfg.encoder_cache, model, dtype)
        log(f"frozen-encoder cache: {enc_cache.dir}")

    ddp_model = model
    if dist.enabled:
        from torch.nn.parallel import DistributedDataParallel as DDP
        # A text-only batch leaves the projector (and a trainable encoder) without gradients, and MoE
        # experts can go unused: DDP must then look for unused parameters.
        ddp_model = DDP(model, device_ids=[device.index] if device.type == "cuda" else None,
                        find_unused_parameters=mcfg.use_moe or stage.vision or cfg.unfreeze_vision)

    sampler = StepSampler(len(ds), cfg.batch_size, cfg.grad_accum, dist.world, dist.rank, cfg.seed)
    return Parts(cfg=cfg, out=Path(cfg.out), dist=dist, device=device, log=log, stage=stage, tok=tok, model=model,
                 ddp_model=ddp_model, peft_model=peft_model, dtype=dtype, autocast=autocast, ds=ds, sampler=sampler,
                 params=params, opt=opt, scaler=scaler, lr=lr, min_lr=min_lr, enc_cache=enc_cache,
                 collate=Collator(tok.pad_id, cfg.padding, max_length))


def _resume(p: Parts) -> Run:
    """A fresh Run, or the one a checkpoint saved (--resume): weights, optimizer, position, RNG states."""
    cfg, dist, out, log = p.cfg, p.dist, p.out, p.log
    run = Run(total_steps=cfg.max_steps or p.sampler.steps_per_epoch() * cfg.epochs)
    found = _find_resume(cfg.resume, out, dist, log)
    if cfg.resume == "auto" and found is None:
        log(f"--resume auto: no checkpoint in {out / 'checkpoints'} yet, starting the run")
    if not found:
        return run
    st = ckpt.load_checkpoint(found, p.model, p.opt, p.scaler, verified=True)   # _find_resume verified it
    run.step, run.epoch, run.consumed = st["step"], st["epoch"], st["consumed"]
    run.bad_in_row, run.bad_steps = st.get("bad_in_row", 0), st.get("bad_steps", 0)
    if dist.main:
        run.skipped_base = Counter(st.get("skipped", {}))
    run.total_steps = _resumed_total(cfg, st, p.sampler, run.step, run.epoch, run.consumed, run.total_steps, log)
    _restore_rng(st.get("rng"), cfg.seed, run.step, dist, log)
    for change in _config_changes(st.get("config", {}), cfg):
        log(f"warning: resuming with a changed setting, the run will not match an uninterrupted one: {change}")
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        for moved in ckpt.set_aside_newer(out, run.step):
            log(f"checkpoint newer than the resume point set aside: {moved}")
    log(f"resumed from {found} at step {run.step} of {run.total_steps} (epoch {run.epoch}, {run.consumed} of "
        f"{len(p.ds)} rows consumed)")
    return run


def _open_outputs(p: Parts, run: Run) -> None:
    """Metrics log, train_config.json, the hardware peak for MFU, the row trace and the progress bar."""
    cfg, dist, out = p.cfg, p.dist, p.out
    p.metrics = MetricsLog(out / "metrics.jsonl", cfg.logger, f"{p.stage.name}", cfg.to_json(), enabled=dist.main)
    if dist.main:
        out.mkdir(parents=True, exist_ok=True)
        (out / "train_config.json").write_text(json.dumps(cfg.to_json(), indent=2))
        _drop_metrics_after(out / "metrics.jsonl", run.step)      # steps to be trained (again) from here
        with torch.random.fork_rng(devices=[p.device] if p.device.type == "cuda" else []):   # no RNG draw leaks
            p.peak = measure_peak(p.device, p.dtype)
    if cfg.trace_rows:
        out.mkdir(parents=True, exist_ok=True)
        p.trace = open(out / f"rows-rank{dist.rank}.jsonl", "a")
    if cfg.progress and dist.main:
        from tqdm import tqdm
        p.bar = tqdm(total=run.total_steps, initial=run.step, desc=p.stage.name, unit="step", dynamic_ncols=True)


def _skipped_totals(p: Parts, run: Run) -> Counter:
    """Skipped rows by kind over all ranks and the run before any resume (a collective call)."""
    total = Counter(run.skipped_base)
    for c in gather_objects(dict(run.skipped_local)):
        total.update(c)
    return total


def _save_checkpoint(p: Parts, run: Run) -> None:
    """A collective call: every rank hands over its RNG state and skip counts, rank 0 writes."""
    cfg = p.cfg
    rngs = gather_objects(ckpt.rng_state())
    extra = {"epoch": run.epoch, "consumed": run.consumed, "world": p.dist.world,
             "global_batch": p.sampler.global_batch, "total_steps": run.total_steps,
             "skipped": dict(_skipped_totals(p, run)), "bad_steps": run.bad_steps, "bad_in_row": run.bad_in_row,
             "loader_seed": cfg.seed + run.epoch, "row_seed": "row_seed(seed, epoch, row) (train/sampler.py)",
             "config": cfg.to_json()}
    if p.dist.main:
        path = ckpt.save_checkpoint(p.out, run.step, p.model, p.opt, p.scaler, extra, cfg.keep_last, rng=rngs)
        p.log(f"checkpoint written: {path}")


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
        _save_checkpoint(p, run)
        p.metrics.close()
        cleanup()
        return {"stopped": True, "step": run.step, "out": str(out)}
    if window.steps:
        run.last_loss = _log_window(window, p, run, _skipped_totals(p, run))
    skipped = _skipped_totals(p, run)
    summary = {"stage": p.stage.name, "steps": run.step, "final_loss": run.last_loss, "skipped": dict(skipped),
               "bad_steps": run.bad_steps, "out": str(out)}
    if cfg.save_every:
        _save_checkpoint(p, run)
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


class NonFiniteLoss(RuntimeError):
    """Too many non-finite losses in a row: the run is diverging or the data is broken."""


def _seed_all(seed: int) -> None:
    import random

    import numpy as np
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


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
    _seed_all(torch.initial_seed() % 2**63)       # torch seeds each worker with base_seed + worker_id


def _zero_loss(ddp_model, tok, device) -> torch.Tensor:
    """A zero loss that still runs the model (a 2-token dummy row), for a micro-batch whose rows were all
    skipped: every rank must run forward and backward so that DDP's all-reduce stays in step."""
    ids = torch.tensor([[tok.bos_id, tok.eos_id]], device=device)
    return ddp_model(ids, labels=ids.clone()).loss * 0.0


def _find_resume(resume, out: Path, dist, log) -> str | None:
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


def _resumed_total(cfg, st, sampler, step, epoch, consumed, total, log) -> int:
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


def _restore_rng(rngs, seed: int, step: int, dist, log) -> None:
    """Each rank takes back its own generator states; with another world size there is no state to take
    back for some ranks, so every rank is reseeded from (seed, step, rank) instead."""
    if isinstance(rngs, dict):
        rngs = [rngs]
    if rngs and len(rngs) == dist.world:
        ckpt.set_rng_state(rngs[dist.rank])
        return
    _seed_all(row_seed(seed, step, dist.rank))
    log(f"RNG states were saved for {len(rngs or [])} process(es), this run has {dist.world}: generators "
        f"reseeded from (seed, step, rank)")


# settings whose change makes a resumed run differ from an uninterrupted one
_RUN_KEYS = ("stage", "data", "init_from", "preset", "model_overrides", "batch_size", "grad_accum", "lr", "min_lr",
             "warmup_steps", "weight_decay", "grad_clip", "max_length", "padding", "trainable", "unfreeze_vision",
             "dtype", "seed", "epochs", "max_steps", "think_block", "lora_rank", "lora_alpha", "lora_dropout",
             "lora_targets", "lora_projector")


def _config_changes(old: dict, cfg) -> list[str]:
    new = cfg.to_json()
    return [f"{k}: {old[k]!r} -> {new[k]!r}" for k in _RUN_KEYS if k in old and old[k] != new[k]]


def _drop_metrics_after(path: Path, step: int) -> None:
    """After a resume, forget metric records of steps that will be trained again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)


def _log_window(w: Window, p: Parts, run: Run, skipped: Counter) -> float:
    """Log one interval and start the next: the numbers are summed over ranks (a collective call), rank 0
    writes them. Returns the interval's mean loss."""
    dist, model, bar, log = p.dist, p.model, p.bar, p.log
    dt = time.perf_counter() - w.t0
    loss_sum = w.loss.detach().double().reshape(1)
    counts = [w.n, w.samples, w.real, w.tokens, w.images, w.labels, w.len_sum]
    stats = torch.cat([loss_sum, torch.tensor(counts, dtype=torch.float64, device=loss_sum.device)])
    if dist.enabled:
        stats = all_reduce_sum(stats)
    loss_sum, n, samples, real, tokens, images, labels, len_sum = stats.tolist()
    loss = loss_sum / n if n else float("nan")
    steps = max(1, w.steps)
    flops = sum(flops_breakdown(model.cfg, int(real), int(labels), len_sum, int(images), trainable_fraction(model),
                                model.vision_trainable).values())
    rec = {"step": run.step, "epoch": run.epoch, "loss": round(loss, 5), "lr": p.opt.param_groups[0]["lr"],
           "step_time_s": round(dt / steps, 4), "samples_per_s": round(samples / dt, 2),
           "real_tokens_per_s": round(real / dt, 1), "tokens_per_s": round(tokens / dt, 1),
           "pad_fraction": round(1 - real / max(1.0, tokens), 3),
           "mfu": round(flops / dt / p.peak / dist.world, 4) if p.peak else None,
           "skipped": sum(skipped.values()), "skipped_by_kind": dict(sorted(skipped.items())),
           "bad_steps": run.bad_steps}
    p.metrics.log(rec)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['real_tokens_per_s']:.0f}",
                        skipped=rec["skipped"])
    elif dist.main:
        log(json.dumps({k: v for k, v in rec.items() if k != "skipped_by_kind"}))
    if skipped and dist.main:
        line = "skipped rows so far: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items()))
        (bar.write if bar is not None else log)(line if bar is None else f"[train] {line}")
    w.reset()
    return loss
