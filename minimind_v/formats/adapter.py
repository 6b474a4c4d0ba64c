"""LoRA adapter folders (what `train --lora-rank` writes, train/lora.py): find the base, load, merge.

An adapter folder is PEFT's own (`adapter_config.json` + `adapter_model.safetensors`) plus our tokenizer;
its `base_model_name_or_path` names the model folder it was trained on. Loading goes through our strict
loader for the base and PEFT for the adapter, so `load_model` on an adapter folder returns a plain
MiniMindVLM with the LoRA products merged in: chat, eval, serve and export take it unchanged.
"""
from __future__ import annotations

import json
from pathlib import Path

ADAPTER_CONFIG = "adapter_config.json"


def is_adapter_folder(folder: str | Path) -> bool:
    return (Path(folder) / ADAPTER_CONFIG).is_file()


def base_of(folder: str | Path) -> Path:
    """The base model folder an adapter folder names (relative paths are taken from the adapter folder)."""
    folder = Path(folder)
    if not is_adapter_folder(folder):
        raise FileNotFoundError(f"{folder} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    raw = json.loads((folder / ADAPTER_CONFIG).read_text())
    base = raw.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{folder / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    p = Path(base)
    p = p if p.is_absolute() else (folder / p).resolve()
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"the base model of adapter {folder} is not there: {p} (base_model_name_or_path in "
                                f"{ADAPTER_CONFIG}; edit it if the base moved)")
    return p


def attach_adapter(base, folder: str | Path, merge: bool = True):
    """`base` (our model, loaded strictly by the caller) + the adapter in `folder` through PEFT. merge=True:
    the LoRA products folded into the weights and PEFT's wrappers removed (a plain MiniMindVLM, as fast as
    the base); merge=False: the PeftModel (the adapter's own arithmetic, for comparisons)."""
    from peft import PeftModel
    folder = Path(folder)
    check_adapter_keys(folder, base)
    model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    if not merge:
        return model.eval()
    return model.merge_and_unload().eval()


def check_adapter_keys(folder: Path, base) -> None:
    """Fail loudly when the adapter's targets do not exist in the base (PEFT would only warn)."""
    from safetensors import safe_open
    with safe_open(str(folder / "adapter_model.safetensors"), "pt") as f:
        keys = list(f.keys())
    modules = {n for n, _ in base.named_modules()}
    missing = sorted({k.split(".lora_")[0].removeprefix("base_model.model.") for k in keys if ".lora_" in k}
                     - modules)
    if missing:
        raise ValueError(f"adapter {folder} does not fit its base model: no module {missing[:6]} in the base")
