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


def adapter_config(folder: str | Path) -> dict:
    """`adapter_config.json` as a dict; anything else is one ValueError naming the file."""
    path = Path(folder) / ADAPTER_CONFIG
    if not path.is_file():
        raise FileNotFoundError(f"{folder} is not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path} must hold a JSON object, not a {type(raw).__name__}")
    r = raw.get("r")
    if not isinstance(r, int) or isinstance(r, bool) or r <= 0:
        raise ValueError(f"{path}: 'r' (the LoRA rank) must be a positive integer, got {r!r}")
    return raw


def base_of(folder: str | Path) -> Path:
    """The base model folder an adapter folder names (relative paths are taken from the adapter folder),
    resolved once. The base must be a plain model folder: an adapter naming itself, another adapter (a
    chain, or two naming each other) or a value that is not a path string is refused with one line, so no
    loader ever recurses through adapters."""
    folder = Path(folder)
    raw = adapter_config(folder)
    base = raw.get("base_model_name_or_path")
    if not base:
        raise ValueError(f"{folder / ADAPTER_CONFIG} names no base model (base_model_name_or_path)")
    if not isinstance(base, str):
        raise ValueError(f"{folder / ADAPTER_CONFIG}: base_model_name_or_path must be a folder path (a string), "
                         f"got a {type(base).__name__}")
    p = Path(base)
    p = p if p.is_absolute() else (folder / p).resolve()
    if p.resolve() == folder.resolve():
        raise ValueError(f"adapter {folder} names itself as its base model (base_model_name_or_path in "
                         f"{ADAPTER_CONFIG}); point it at the model folder it was trained on")
    if is_adapter_folder(p):
        raise ValueError(f"adapter {folder} names another LoRA adapter ({p}) as its base; adapters are not stacked: "
                         f"`minimind-v merge {p} MERGED` first, then point base_model_name_or_path at MERGED")
    if not (p / "config.json").exists():
        raise FileNotFoundError(f"the base model of adapter {folder} is not there: {p} (base_model_name_or_path in "
                                f"{ADAPTER_CONFIG}; edit it if the base moved)")
    return p


def base_chain(folder: str | Path) -> list[Path]:
    """The folders an adapter reads besides itself (its base), or [] for a plain model folder."""
    return [base_of(folder)] if is_adapter_folder(folder) else []


def attach_adapter(base, folder: str | Path, merge: bool = True):
    """`base` (our model, loaded strictly by the caller) + the adapter in `folder` through PEFT. merge=True:
    the LoRA products folded into the weights and PEFT's wrappers removed (a plain MiniMindVLM, as fast as
    the base); merge=False: the PeftModel (the adapter's own arithmetic, for comparisons). Every way an
    adapter file can be wrong (truncated, not safetensors, shapes that do not fit its rank or the base,
    values that are not finite) is one ValueError naming the folder."""
    from peft import PeftModel
    folder = Path(folder)
    check_adapter_keys(folder, base)
    try:
        model = PeftModel.from_pretrained(base, str(folder), is_trainable=False)
    except (RuntimeError, ValueError, KeyError, TypeError, OSError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"adapter {folder} cannot be loaded onto its base model: {first[:300]}") from None
    if not merge:
        return model.eval()
    return model.merge_and_unload().eval()


def read_adapter_tensors(folder: Path) -> dict:
    """adapter_model.safetensors -> {name: tensor}; a truncated, random or oversized-header file is one
    ValueError (the safetensors reader refuses headers over 100 MB before reading them)."""
    from safetensors.torch import load_file
    path = folder / "adapter_model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"adapter {folder} has no adapter_model.safetensors")
    try:
        return load_file(str(path))
    except Exception as e:  # noqa: BLE001 - SafetensorError and OS errors for a damaged file
        raise ValueError(f"{path} is not a readable safetensors file ({type(e).__name__}: "
                         f"{str(e)[:200]})") from None


def check_adapter_keys(folder: Path, base) -> None:
    """Fail loudly when the adapter's tensors do not fit the base: a target that does not exist (PEFT would
    only warn), a shape that disagrees with `r` or with the base layer, or a value that is not finite."""
    import torch
    folder = Path(folder)
    r = adapter_config(folder)["r"]
    tensors = read_adapter_tensors(folder)
    modules = dict(base.named_modules())
    targets = {k.split(".lora_")[0].removeprefix("base_model.model.") for k in tensors if ".lora_" in k}
    missing = sorted(targets - set(modules))
    if missing:
        raise ValueError(f"adapter {folder} does not fit its base model: no module {missing[:6]} in the base")
    for k, t in tensors.items():
        if ".lora_" in k:
            layer = modules[k.split(".lora_")[0].removeprefix("base_model.model.")]
            want = None
            if ".lora_A." in k and hasattr(layer, "in_features"):
                want = (r, layer.in_features)
            elif ".lora_B." in k and hasattr(layer, "out_features"):
                want = (layer.out_features, r)
            if want is not None and tuple(t.shape) != want:
                raise ValueError(f"adapter {folder} does not fit: {k} has shape {tuple(t.shape)}, expected {want} "
                                 f"(r = {r} in {ADAPTER_CONFIG}, layer {layer.in_features}->{layer.out_features})")
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise ValueError(f"adapter {folder}: tensor {k} holds NaN or infinite values (a diverged run?)")
