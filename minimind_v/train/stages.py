"""The four training stages as presets: what is trainable, learning rate, max length, data reader.

| stage        | data                       | trainable                   | lr            | max len |
|--------------|----------------------------|-----------------------------|---------------|---------|
| llm-pretrain | JSONL {"text"} or parquet  | all LLM                     | 5e-4 -> 5e-5  | 512     |
| llm-sft      | JSONL {"conversations"}    | all LLM                     | 5e-5 -> 5e-6  | 768     |
| vlm-pretrain | image-caption parquet      | projector + LLM layer 0     | 1e-4 -> 1e-5  | 360     |
| vlm-sft      | mixed image/text parquet   | projector + whole LLM       | 1e-5 -> 1e-6  | 768     |

These are the March 2026 recipe's defaults. The 0420 release trains less (same lr schedule):

| stage        | trainable (0420)                                  | max len | here                                   |
|--------------|---------------------------------------------------|---------|----------------------------------------|
| vlm-pretrain | projector only                                    | 450     | `--trainable projector --max-length 450` |
| vlm-sft      | projector + first and last LLM layers             | 768     | `--trainable projector+first+last`     |

`projector+first+last` names layer 0 and layer num_hidden_layers - 1 of whatever model is trained
(the prefix `model.layers.LAST.` is resolved against the model in `set_trainable`).

The vision encoder is frozen in every stage unless `unfreeze_vision` (the demo's encoder is trained
from scratch, so it needs it).
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Stage:
    name: str
    trainable: tuple[str, ...]     # parameter-name prefixes
    lr: float
    min_lr: float
    max_length: int
    vision: bool                   # does the stage read images


STAGES = {
    "llm-pretrain": Stage("llm-pretrain", ("model.",), 5e-4, 5e-5, 512, False),
    "llm-sft": Stage("llm-sft", ("model.",), 5e-5, 5e-6, 768, False),
    "vlm-pretrain": Stage("vlm-pretrain", ("vision_proj.", "model.layers.0."), 1e-4, 1e-5, 360, True),
    "vlm-sft": Stage("vlm-sft", ("vision_proj.", "model."), 1e-5, 1e-6, 768, True),
}

LAST = "model.layers.LAST."       # stands for the model's last decoder layer

TRAINABLE_CHOICES = {
    "llm": ("model.",),
    "projector": ("vision_proj.",),
    "projector+layer0": ("vision_proj.", "model.layers.0."),
    "projector+first+last": ("vision_proj.", "model.layers.0.", LAST),     # the 0420 vlm-sft recipe
    "projector+llm": ("vision_proj.", "model."),
    "all": ("vision_proj.", "model.", "vision_encoder."),
}


def get_stage(name: str) -> Stage:
    if name not in STAGES:
        raise KeyError(f"unknown stage {name!r}; choose from {', '.join(STAGES)}")
    return STAGES[name]


def set_trainable(model, prefixes: tuple[str, ...], unfreeze_vision: bool = False) -> int:
    """requires_grad on parameters whose name starts with one of `prefixes`; returns the count."""
    last = f"model.layers.{model.cfg.num_hidden_layers - 1}."
    prefixes = tuple(last if p == LAST else p for p in prefixes)
    if unfreeze_vision:
        prefixes = tuple(prefixes) + ("vision_encoder.",)
    n = 0
    for name, p in model.named_parameters():
        p.requires_grad_(name.startswith(prefixes))
        n += p.numel() if p.requires_grad else 0
    model.set_vision_trainable(unfreeze_vision)
    return n
