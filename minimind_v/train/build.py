"""What a training run builds once, before its first step: the tokenizer, the model, the data set, the
optimizer and the sampler (`build_parts` -> Parts). Every refusal (bad settings, no usable data, an absent
file) happens here, before anything is written to the run folder.
"""
from __future__ import annotations

import contextlib
import random
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..config import ModelConfig, preset, torch_device, torch_dtype
from ..data.collate import Collator
from ..data.parquet import VLMDataset
from ..data.text import TextDataset
from ..formats.load import load_model
from ..model.vlm import MiniMindVLM
from ..tokenizer import Tokenizer
from .config import TrainConfig
from .distributed import Dist, setup
from .metrics import MetricsLog
from .sampler import StepSampler
from .stages import TRAINABLE_CHOICES, get_stage, set_trainable


class NoUsableData(ValueError):
    """The data holds no row training could use: stopping before step 1 (no model folder is written)."""


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


def seed_all(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: TrainConfig, tok: Tokenizer, log) -> MiniMindVLM:
    if cfg.init_from and Path(cfg.init_from).is_file():
        # an original checkpoint (llm_768.pth, sft_vlm_768.pth ...): its shape from <stem>_config.json beside it,
        # else --preset; its encoder from --vision-encoder (formats/reference.py)
        src = Path(cfg.init_from)
        sibling = src.with_name(src.stem + "_config.json").exists()
        model = load_model(src, preset_name=None if sibling else cfg.preset, vision_encoder=cfg.vision_encoder,
                           log=log)
        log(f"initialised from {src}" + ("" if sibling else f" as preset {cfg.preset!r}"))
        return model
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
                log(f"the first {i} row(s) are unusable ({kinds_text(kinds)}); training skips such rows")
            return i
        kinds[item.kind] += 1
    raise NoUsableData(f"none of the {len(ds)} row(s) is usable, skipped by kind: {kinds_text(kinds)}; "
                       f"`minimind-v data check FILE` lists every problem")


def kinds_text(kinds: Counter) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(kinds.items()))


def build_parts(cfg: TrainConfig) -> Parts:
    """Tokenizer, model, data, optimizer and sampler; every refusal (bad settings, no data) comes here,
    before anything is written."""
    cfg.check()
    if cfg.encoder_cache and cfg.augment:    # refused before any work is done
        raise ValueError("--encoder-cache keeps one encoding per picture, --augment changes the picture every "
                         "epoch: use one or the other")
    device = torch_device(cfg.device)
    dist = setup(device.type)
    if dist.enabled and device.type == "cuda":
        device = torch.device("cuda", dist.local_rank)
    log = (lambda msg: print(f"[train] {msg}", flush=True)) if dist.main else (lambda msg: None)
    stage = get_stage(cfg.stage)
    seed_all(cfg.seed)                   # the same initial weights on every rank

    check_data_files([str(f) for f in cfg.data])   # zero rows, a missing column: refused before any model is built
    tok_dir = cfg.tokenizer or cfg.init_from
    if tok_dir is None:
        raise ValueError("give a tokenizer folder (--tokenizer) or a model folder to start from (--from)")
    if Path(tok_dir).is_file():
        raise ValueError(f"--from {tok_dir} is a checkpoint file, which holds no tokenizer: give --tokenizer DIR "
                         f"(e.g. the released model's folder)")
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
    seed_all(cfg.seed + dist.rank)       # training randomness (dropout...) differs between ranks
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

