"""One loader for every supported checkpoint: look at what PATH is, then hand it to its format.

    a folder whose config.json is ours               -> folder.load_folder
    a folder whose config.json is Hugging Face's     -> hf_folder.load_hf_model (exported here, or the original's)
    a file (.pth / .pt / .bin / .safetensors)        -> reference.load_checkpoint (the original's layout; it
                                                        needs a preset or config, see that module)

Only this module tells the formats apart, so adding a format means one more branch here. The formats share
a few helpers and nothing else: the strict loader (folder.py), the config field mapping (fields.py), the
safetensors / .bin reader (hf_folder.read_weights_file) and, for the original's files, what each upstream
release implies (generations.py: a bare checkpoint's generation is detected once, from its projector keys,
and that answer picks its config, its encoder class and its pixels).
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..model.vlm import MiniMindVLM
from .folder import load_folder, read_config
from .hf_folder import is_hf_config, load_hf_model
from .reference import CHECKPOINT_SUFFIXES, load_checkpoint


def load_model(path: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
               vision: bool = True, *, preset_name: str | None = None, config: str | None = None,
               vision_encoder: str | None = None, log=print) -> MiniMindVLM:
    """Any supported folder or checkpoint file -> our model, loaded strictly, in eval mode. `preset_name`,
    `config` and `vision_encoder` apply to a bare checkpoint file only (a folder carries its own)."""
    path = Path(path)
    if path.is_file():
        if path.suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(f"{path}: expected a model folder or an original checkpoint "
                             f"({', '.join(CHECKPOINT_SUFFIXES)})")
        model = load_checkpoint(path, preset_name=preset_name, config=config, vision_encoder=vision_encoder,
                                vision=vision, log=log)
        return model.to(device=device, dtype=dtype).eval()
    if (path / "adapter_config.json").exists():      # a LoRA adapter folder: its base + the adapter, merged
        from .adapter import attach_adapter, base_of
        base = load_model(base_of(path), vision=vision)
        return attach_adapter(base, path).to(device=device, dtype=dtype).eval()
    if preset_name or config or vision_encoder:
        raise ValueError(f"{path} is a folder with its own config.json; preset / config / vision_encoder apply to "
                         f"bare checkpoint files")
    if (path / "config.json").exists() and is_hf_config(read_config(path)):
        return load_hf_model(path, vision=vision).to(device=device, dtype=dtype).eval()
    return load_folder(path, device=device, dtype=dtype, vision=vision)
