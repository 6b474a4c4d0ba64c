"""The `minimind-v train` flags, generated from TrainConfig's fields.

Why generated: the flags were a hand-written copy of the dataclass, and every field added to TrainConfig
later (think_block, save_final, plot) stayed out of reach of the command line until someone remembered
to copy it. Here each field becomes `--kebab-case-name` on its own: the type comes from the annotation
(`int | None` -> int, default None; `list[str]` -> one or more values; `bool` -> `--x/--no-x`), the
default from the field. What cannot be read from the dataclass is in FLAGS, one entry per field: its
group in `--help`, its help text, and, where it has one, other spellings (`--from`), choices and a
metavar. A field missing from FLAGS still gets its flag (in the "other" group); tests/test_cli.py
insists that it also gets a help text.

One field is not a plain value: `model_overrides` (a dict of ModelConfig fields) is set by the named
shortcuts `--hidden-size`, `--num-layers`, `--use-moe` and, for any other field, `--model-override
FIELD=VALUE` (repeatable; VALUE read as JSON when it parses, else as a string).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import types
import typing
from typing import NamedTuple

from ..config import PRESETS
from .loop import TrainConfig
from .stages import STAGES, TRAINABLE_CHOICES


class Flag(NamedTuple):
    group: str
    help: str
    spellings: tuple[str, ...] = ()      # extra option strings, e.g. ("--from",)
    choices: tuple | None = None
    metavar: str | None = None


GROUPS = {
    "what": "what to train",
    "model": "a new model (without --from)",
    "schedule": "optimisation",
    "data": "data",
    "run": "where it runs",
    "log": "logging and checkpoints",
    "lora": "LoRA (PEFT): train a low-rank adapter on --from instead of the full weights",
    "other": "other",
}

FLAGS: dict[str, Flag] = {
    "stage": Flag("what", "what the stage trains, its default lr and max length, and its data reader",
                  choices=tuple(STAGES)),
    "data": Flag("what", "parquet files (VLM stages, or text) or JSONL files", metavar="FILE"),
    "out": Flag("what", "run folder: metrics.jsonl, loss.png, checkpoints/, model/"),
    "init_from": Flag("what", "model folder to start from (the previous stage's OUT/model)",
                      spellings=("--from",), metavar="DIR"),
    "preset": Flag("model", "model size when not using --from", choices=tuple(PRESETS)),
    "tokenizer": Flag("model", "tokenizer folder (needed without --from)", metavar="DIR"),
    "vision_encoder": Flag("model", "local SigLIP2 folder (e.g. siglip2-base-p16-ve) for a new model", metavar="DIR"),
    "model_overrides": Flag("model", "set any ModelConfig field of a new model (repeatable); VALUE is JSON or a "
                                     "string", spellings=("--model-override",), metavar="FIELD=VALUE"),
    "epochs": Flag("schedule", "passes over the data"),
    "max_steps": Flag("schedule", "stop after N optimizer steps (overrides --epochs)", metavar="N"),
    "batch_size": Flag("schedule", "rows per micro-batch per process"),
    "grad_accum": Flag("schedule", "micro-batches per optimizer step"),
    "lr": Flag("schedule", "peak learning rate (stage default if unset)"),
    "min_lr": Flag("schedule", "final learning rate of the cosine decay (default lr/10)"),
    "warmup_steps": Flag("schedule", "linear warm-up steps"),
    "weight_decay": Flag("schedule", "AdamW weight decay"),
    "grad_clip": Flag("schedule", "gradient norm clip"),
    "trainable": Flag("schedule", "override what the stage trains", choices=tuple(TRAINABLE_CHOICES)),
    "unfreeze_vision": Flag("schedule", "also train the vision encoder"),
    "max_length": Flag("data", "tokens per row (stage default if unset)"),
    "padding": Flag("data", "pad to the batch's longest row, to max length, or pack rows into sequences",
                    choices=("longest", "max", "pack")),
    "augment": Flag("data", "random zoom (+-15%%), shift (+-8%%), brightness and contrast (+-10%%) of training "
                            "pictures, times S (1 = those ranges; 0 = off). Helps when few pictures are seen for "
                            "many epochs", metavar="S"),
    "encoder_cache": Flag("data", "cache the frozen encoder's outputs on disk by image hash and reuse them across "
                                  "epochs and runs (faster when pictures repeat; refused with --unfreeze-vision: a "
                                  "trained encoder's outputs change)", metavar="DIR"),
    "think_block": Flag("data", "put an empty <think></think> block before each assistant reply that has none "
                                "(the original's reasoning-model template)"),
    "control_tokens_in_text": Flag("data", "trusted data only: strings such as <|im_end|> inside messages stay "
                                           "control tokens (by default what a message says is encoded as plain "
                                           "text, so no row can forge a turn)"),
    "num_workers": Flag("data", "DataLoader worker processes"),
    "dtype": Flag("run", "auto: bf16 on GPU, fp32 on CPU", choices=("auto", "fp32", "bf16", "fp16")),
    "device": Flag("run", "auto (CUDA when available, else CPU) or a torch device name such as cuda:1"),
    "seed": Flag("run", "random seed (initial weights, data order)"),
    "log_every": Flag("log", "print and record a log line every N optimizer steps", metavar="N"),
    "save_every": Flag("log", "checkpoint every N optimizer steps (0: only at the end or on a signal)",
                       metavar="N"),
    "keep_last": Flag("log", "checkpoints to keep", metavar="N"),
    "resume": Flag("log", "checkpoint folder, or 'auto' for the newest valid one in --out (else start)",
                   metavar="DIR|auto"),
    "logger": Flag("log", "also send the metrics to an experiment tracker", choices=("none", "wandb", "swanlab")),
    "max_bad_steps": Flag("log", "abort after N non-finite losses in a row", metavar="N"),
    "trace_rows": Flag("log", "write OUT/rows-rank<R>.jsonl: the data rows each optimizer step trained on"),
    "progress": Flag("log", "a progress bar"),
    "save_final": Flag("log", "write OUT/model at the end"),
    "plot": Flag("log", "draw OUT/loss.png at the end"),
    "lora_rank": Flag("lora", "LoRA rank (0: full training)", metavar="R"),
    "lora_alpha": Flag("lora", "LoRA scale numerator (default 2 x rank)"),
    "lora_dropout": Flag("lora", "dropout on the adapter's input"),
    "lora_targets": Flag("lora", "LLM linear layers to adapt: all, attn, mlp, or a comma list of q_proj,k_proj,"
                                 "v_proj,o_proj,gate_proj,up_proj,down_proj"),
    "lora_projector": Flag("lora", "train the projector fully and save it in the adapter (auto: when the stage "
                                   "trains it)", choices=("auto", "train", "freeze")),
}

# model_overrides shortcuts: flag -> (ModelConfig field, argparse type or None for a switch, help)
MODEL_SHORTCUTS = {"--hidden-size": ("hidden_size", int, "LLM width of a new model"),
                   "--num-layers": ("num_hidden_layers", int, "LLM layers of a new model"),
                   "--use-moe": ("use_moe", None, "MoE feed-forward (4 experts, top-1)")}


def flag_name(field_name: str) -> str:
    return "--" + field_name.replace("_", "-")


def shortcut_dest(opt: str) -> str:
    return "model_" + opt[2:].replace("-", "_")


def value_type(annotation) -> tuple[type, bool]:
    """(element type, is a list) of a field annotation such as `int`, `str | None`, `list[str]`."""
    args = [a for a in typing.get_args(annotation) if a is not type(None)]
    if isinstance(annotation, types.UnionType) or typing.get_origin(annotation) is typing.Union:
        return value_type(args[0])
    if typing.get_origin(annotation) is list:
        return (args[0] if args else str), True
    return annotation, False


def field_default(f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def add_train_arguments(p: argparse.ArgumentParser) -> None:
    """One flag per TrainConfig field (plus the model_overrides shortcuts), in FLAGS' groups."""
    hints = typing.get_type_hints(TrainConfig)
    groups = {key: p.add_argument_group(title) for key, title in GROUPS.items()}
    for f in dataclasses.fields(TrainConfig):
        spec = FLAGS.get(f.name, Flag("other", ""))
        g = groups[spec.group]
        if f.name == "model_overrides":
            g.add_argument(*spec.spellings, dest="model_override", action="append", default=[],
                           metavar=spec.metavar, help=spec.help)
            for opt, (_, kind, text) in MODEL_SHORTCUTS.items():
                if kind is None:
                    g.add_argument(opt, dest=shortcut_dest(opt), action="store_true", help=text)
                else:
                    g.add_argument(opt, dest=shortcut_dest(opt), type=kind, metavar="N", help=text)
            continue
        kind, is_list = value_type(hints[f.name])
        default = field_default(f)
        kw = dict(dest=f.name, help=spec.help)
        if default is dataclasses.MISSING:
            kw["required"] = True
        else:
            kw["default"] = default
        if kind is bool:
            kw["action"] = argparse.BooleanOptionalAction
            if default is True:
                kw["help"] = f"{spec.help} (on by default)"
        else:
            kw["type"] = kind
            if is_list:
                kw["nargs"] = "+"
            if spec.choices is not None:
                kw["choices"] = list(spec.choices)
            if spec.metavar or kind is int:
                kw["metavar"] = spec.metavar or "N"
            if default not in (None, dataclasses.MISSING) and "default" not in spec.help:
                kw["help"] = f"{spec.help} (default: {default})".lstrip()
        g.add_argument(*spec.spellings, flag_name(f.name), **kw)


def parse_override(item: str) -> tuple[str, object]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"--model-override {item!r}: use FIELD=VALUE")
    try:
        return key, json.loads(value)
    except json.JSONDecodeError:
        return key, value


def config_from_args(a: argparse.Namespace) -> TrainConfig:
    """The TrainConfig the parsed `train` arguments describe."""
    values = {f.name: getattr(a, f.name) for f in dataclasses.fields(TrainConfig) if f.name != "model_overrides"}
    over = dict(parse_override(item) for item in a.model_override)
    for opt, (field_name, _, _) in MODEL_SHORTCUTS.items():
        v = getattr(a, shortcut_dest(opt))
        if v:                                    # unset (None / False) leaves the preset's value
            over[field_name] = v
    return TrainConfig(model_overrides=over, **values)
