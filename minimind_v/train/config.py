"""TrainConfig: every training setting, described once.

Each field carries, as dataclass metadata, everything the rest of the package needs to know about it: its
help text and group in `minimind-v train --help`, other spellings (`--from`), choices, a metavar, the
bounds a value must lie in, and whether changing it between a checkpoint and its resume makes the resumed
run differ from an uninterrupted one. `train/flags.py` builds the command line from this metadata and
`changes_on_resume` the resume warning, so adding a setting is one edit here: a new field with its
`setting(...)` appears in `--help` and in the resume check with nothing else to touch.

`TrainConfig.check()` refuses a value outside its bounds with one line naming the bound, before any work
starts (the loop calls it first; so does the command line).
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import asdict, dataclass, field

from ..config import PRESETS
from .stages import STAGES, TRAINABLE_CHOICES

GROUPS = {
    "what": "what to train",
    "model": "a new model (without --from)",
    "schedule": "optimisation",
    "data": "data",
    "run": "where it runs",
    "log": "logging and checkpoints",
    "lora": "LoRA (PEFT): train a low-rank adapter on --from instead of the full weights",
    "bench": "a benchmark score during training, logged next to the loss (eval/bench.py, docs/benchmarks.md)",
}

MISSING = dataclasses.MISSING
BIG = 2 ** 31 - 1


def setting(default=MISSING, *, help: str, group: str, resume: bool = False, spellings: tuple[str, ...] = (),
            choices=None, metavar: str | None = None, bounds: tuple | None = None, factory=None):
    """A TrainConfig field and its description. `resume=True`: a changed value on resume is warned about;
    `bounds=(lo, hi)`: inclusive, checked by `TrainConfig.check` (None for an open end)."""
    meta = dict(help=help, group=group, resume=resume, spellings=spellings, choices=choices, metavar=metavar,
                bounds=bounds)
    if factory is not None:
        return field(default_factory=factory, metadata=meta)
    return field(default=default, metadata=meta)


@dataclass
class TrainConfig:
    # ---- what to train
    stage: str = setting(help="what the stage trains, its default lr and max length, and its data reader",
                         group="what", resume=True, choices=tuple(STAGES))
    data: list[str] = setting(help="parquet files (VLM stages, or text) or JSONL files", group="what",
                              resume=True, metavar="FILE")
    out: str = setting(help="run folder: metrics.jsonl, loss.png, checkpoints/, model/", group="what")
    init_from: str | None = setting(None, help="model folder to start from (the previous stage's OUT/model), or an "
                                               "original checkpoint file (llm_768.pth: give --tokenizer, and "
                                               "--preset unless <stem>_config.json is beside it); a Hub id works "
                                               "too (owner/name, owner/name:llm_768.pth; docs/hub.md)",
                                    group="what", resume=True, spellings=("--from",), metavar="DIR")
    # ---- a new model
    preset: str = setting("tiny", help="model size when not using --from (or of a --from checkpoint file)",
                          group="model", resume=True,
                          choices=tuple(PRESETS))
    model_overrides: dict = setting(help="set any ModelConfig field of a new model (repeatable); VALUE is JSON or "
                                         "a string", group="model", resume=True, spellings=("--model-override",),
                                    metavar="FIELD=VALUE", factory=dict)
    tokenizer: str | None = setting(None, help="tokenizer folder (needed without --from)", group="model",
                                    metavar="DIR")
    vision_encoder: str | None = setting(None, help="SigLIP2 folder or Hub id (e.g. jingyaogong/siglip2-base-p16-ve) "
                                                    "for a new model or a --from checkpoint file", group="model",
                                         metavar="DIR")
    # ---- optimisation
    epochs: int = setting(1, help="passes over the data", group="schedule", resume=True, bounds=(1, 100_000))
    max_steps: int | None = setting(None, help="stop after N optimizer steps (overrides --epochs)",
                                    group="schedule", resume=True, metavar="N", bounds=(1, BIG))
    batch_size: int = setting(16, help="rows per micro-batch per process", group="schedule", resume=True,
                              bounds=(1, 65_536))
    grad_accum: int = setting(1, help="micro-batches per optimizer step", group="schedule", resume=True,
                              bounds=(1, 65_536))
    lr: float | None = setting(None, help="peak learning rate (stage default if unset)", group="schedule",
                               resume=True, bounds=(0.0, 10.0))
    min_lr: float | None = setting(None, help="final learning rate of the cosine decay (default lr/10)",
                                   group="schedule", resume=True, bounds=(0.0, 10.0))
    warmup_steps: int = setting(0, help="linear warm-up steps", group="schedule", resume=True, bounds=(0, BIG))
    weight_decay: float = setting(0.01, help="AdamW weight decay", group="schedule", resume=True,
                                  bounds=(0.0, 100.0))
    grad_clip: float = setting(1.0, help="gradient norm clip (0: off)", group="schedule", resume=True,
                               bounds=(0.0, 1e6))
    trainable: str | None = setting(None, help="override what the stage trains", group="schedule", resume=True,
                                    choices=tuple(TRAINABLE_CHOICES))
    unfreeze_vision: bool = setting(False, help="also train the vision encoder", group="schedule", resume=True)
    # ---- data
    max_length: int | None = setting(None, help="tokens per row (stage default if unset)", group="data",
                                     resume=True, bounds=(8, 1 << 20))
    padding: str = setting("longest", help="pad to the batch's longest row, to max length, or pack rows into "
                                           "sequences", group="data", resume=True, choices=("longest", "max", "pack"))
    augment: float = setting(0.0, help="random zoom (+-15%%), shift (+-8%%), brightness and contrast (+-10%%) of "
                                       "training pictures, times S (1 = those ranges; 0 = off). Helps when few "
                                       "pictures are seen for many epochs", group="data", metavar="S",
                             bounds=(0.0, 4.0))
    encoder_cache: str | None = setting(None, help="cache the frozen encoder's outputs on disk by image hash and "
                                                   "reuse them across epochs and runs (faster when pictures "
                                                   "repeat; refused with --unfreeze-vision: a trained encoder's "
                                                   "outputs change)", group="data", metavar="DIR")
    think_block: bool = setting(False, help="put an empty <think></think> block before each assistant reply that "
                                            "has none (the original's reasoning-model template)", group="data",
                                resume=True)
    control_tokens_in_text: bool = setting(False, help="trusted data only: strings such as <|im_end|> inside "
                                                       "messages stay control tokens (by default what a message "
                                                       "says is encoded as plain text, so no row can forge a turn)",
                                           group="data")
    num_workers: int = setting(0, help="DataLoader worker processes", group="data", bounds=(0, 256))
    # ---- where it runs
    dtype: str = setting("auto", help="auto: bf16 on GPU, fp32 on CPU", group="run", resume=True,
                         choices=("auto", "fp32", "bf16", "fp16"))
    device: str = setting("auto", help="auto (CUDA when available, else CPU) or a torch device name such as "
                                       "cuda:1", group="run")
    seed: int = setting(42, help="random seed (initial weights, data order)", group="run", resume=True,
                        bounds=(0, 2 ** 63 - 1))
    # ---- logging and checkpoints
    log_every: int = setting(10, help="print and record a log line every N optimizer steps", group="log",
                             metavar="N", bounds=(1, BIG))
    save_every: int = setting(0, help="checkpoint every N optimizer steps (0: only at the end or on a signal)",
                              group="log", metavar="N", bounds=(0, BIG))
    keep_last: int = setting(2, help="checkpoints to keep", group="log", metavar="N", bounds=(1, 10_000))
    resume: str | None = setting(None, help="checkpoint folder, or 'auto' for the newest valid one in --out (else "
                                            "start)", group="log", metavar="DIR|auto")
    logger: str = setting("none", help="also send the metrics to an experiment tracker", group="log",
                          choices=("none", "wandb", "swanlab"))
    max_bad_steps: int = setting(20, help="abort after N non-finite losses in a row", group="log", metavar="N",
                                 bounds=(1, BIG))
    trace_rows: bool = setting(False, help="write OUT/rows-rank<R>.jsonl: the data rows each optimizer step "
                                           "trained on", group="log")
    progress: bool = setting(True, help="a progress bar", group="log")
    save_final: bool = setting(True, help="write OUT/model at the end", group="log")
    plot: bool = setting(True, help="draw OUT/loss.png at the end", group="log")
    # ---- LoRA
    lora_rank: int = setting(0, help="LoRA rank (0: full training; at most the adapted layers' width)",
                             group="lora", resume=True, metavar="R", bounds=(0, 65_536))
    lora_alpha: float | None = setting(None, help="LoRA scale numerator (default 2 x rank)", group="lora",
                                       resume=True, bounds=(0.0, 1e6))
    lora_dropout: float = setting(0.0, help="dropout on the adapter's input", group="lora", resume=True,
                                  bounds=(0.0, 0.99))
    lora_targets: str = setting("all", help="LLM linear layers to adapt: all, attn, mlp, or a comma list of "
                                            "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj",
                                group="lora", resume=True)
    lora_projector: str = setting("auto", help="train the projector fully and save it in the adapter (auto: when "
                                               "the stage trains it)", group="lora", resume=True,
                                  choices=("auto", "train", "freeze"))
    # ---- a benchmark during training
    eval_every: int = setting(0, help="score --eval-bench every N optimizer steps (0: never)", group="bench",
                              metavar="N", bounds=(0, BIG))
    eval_bench: str | None = setting(None, help="the benchmark scored every --eval-every steps", group="bench",
                                     choices=("mmstar", "pope", "mme", "scienceqa-img", "ai2d"))
    eval_limit: int = setting(64, help="rows of the benchmark scored each time (its first K; 0: all)",
                              group="bench", metavar="K", bounds=(0, BIG))
    eval_bench_data: str | None = setting(None, help="the benchmark's published parquet file or folder (or a "
                                                     "Hub id owner/name:file.parquet)", group="bench",
                                          metavar="PATH")

    def to_json(self) -> dict:
        return json.loads(json.dumps(asdict(self), default=str))     # paths -> strings

    def check(self) -> None:
        """Refuse a value outside its field's bounds or choices (one line naming the bound)."""
        for f in dataclasses.fields(self):
            value, meta = getattr(self, f.name), f.metadata
            if value is None or isinstance(value, (list, dict, bool)):
                continue
            flag = "--" + f.name.replace("_", "-")
            if meta.get("choices") is not None and value not in meta["choices"]:
                raise ValueError(f"{flag} {value!r}: choose one of {', '.join(map(str, meta['choices']))}")
            if meta.get("bounds") is None:
                continue
            lo, hi = meta["bounds"]
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"{flag} {value}: must be a finite number")
            if (lo is not None and value < lo) or (hi is not None and value > hi):
                raise ValueError(f"{flag} {value}: must be between {lo} and {hi}")
        if self.eval_every and not (self.eval_bench and self.eval_bench_data):
            raise ValueError("--eval-every needs --eval-bench NAME and --eval-bench-data PATH (the benchmark's "
                             "parquet file)")
        self.check_paths()

    def check_paths(self) -> None:
        """The run folder never overlaps the model it starts from (training writes OUT/model and checkpoints:
        `--from rr/model --out rr` would replace the base), and LoRA does not start from an adapter (the new
        adapter would name an adapter as its base; merge it first)."""
        from ..outputs import overlap
        why = overlap(self.out, [self.init_from]) if self.init_from and self.out else None
        if why:
            raise ValueError(f"--out {self.out} and --from {self.init_from} overlap ({why}); training writes "
                             f"OUT/model and checkpoints, so the run folder must lie outside the model it starts "
                             f"from")
        for flag, paths in (("--data", self.data), ("--tokenizer", [self.tokenizer]),
                            ("--vision-encoder", [self.vision_encoder])):
            why = overlap(self.out, [p for p in paths or [] if p], replacing=False) if self.out else None
            if why:             # the run would write its folder onto (or into) something it reads
                raise ValueError(f"--out {self.out}: {why} ({flag}); choose a run folder elsewhere")
        if self.lora_rank and self.init_from:
            from ..formats.adapter import is_adapter_folder
            if is_adapter_folder(self.init_from):
                raise ValueError(f"--from {self.init_from} is a LoRA adapter; adapters are not stacked: "
                                 f"`minimind-v merge {self.init_from} MERGED`, then train with --from MERGED")


def changes_on_resume(saved: dict, cfg: TrainConfig) -> list[str]:
    """'name: old -> new' for every resume-relevant setting that differs from the checkpoint's."""
    new = cfg.to_json()
    return [f"{f.name}: {saved[f.name]!r} -> {new[f.name]!r}" for f in dataclasses.fields(cfg)
            if f.metadata.get("resume") and f.name in saved and saved[f.name] != new[f.name]]
