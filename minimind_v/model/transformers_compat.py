"""The one place that knows how the supported `transformers` versions (4.57 .. 5.x) differ for the encoder.

The only difference that reaches us is where a SigLIP vision model keeps its layers. In 4.x
`Siglip2VisionModel` (and `SiglipVisionModel`) hold a `vision_model` submodule, so their weights are
named `vision_model.embeddings...`; 5.x flattened the class to `embeddings...`. Everything else this
package uses (`from_pretrained(dtype=...)`, `last_hidden_state`, the image processor, tokenizers) reads
the same in both. So we decide by structure (does the model have a `vision_model` child?), never by
version number, and keep one name form per file:

    encoder folder (a SigLIP folder's model.safetensors)     what the writer's version wrote (4.x nested,
                                                             5.x flat); read in either (`load_pretrained`)
    our model folder / training checkpoint                   written flat (`vision_encoder.encoder.embeddings...`,
                                                             the wrapper's state-dict hooks); read in either
    exported HF folder                                       nested, `vision_encoder.vision_model.*` (formats/hf_folder.py)

Code that needs the encoder's dtype or device asks its parameters, not an attribute path.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

NEST = "vision_model."


class EncoderWeightsMismatch(ValueError):
    """Encoder weights that do not fit the encoder they are loaded into (names or shapes)."""


def is_nested(encoder: nn.Module) -> bool:
    """True for the 4.x layout (`encoder.vision_model.embeddings`), False for 5.x (`encoder.embeddings`)."""
    return isinstance(getattr(encoder, "vision_model", None), nn.Module)


def flat_name(name: str) -> str:
    """An encoder weight name in either layout -> the flat (5.x) form."""
    return name[len(NEST):] if name.startswith(NEST) else name


def installed_name(encoder: nn.Module, name: str) -> str:
    """An encoder weight name in either layout -> the name `encoder` (as built here) uses."""
    flat = flat_name(name)
    return NEST + flat if is_nested(encoder) else flat


def load_into(encoder: nn.Module, tensors: dict[str, torch.Tensor], source: str) -> nn.Module:
    """Load encoder weights named in either layout into `encoder`, strictly; the error names the keys."""
    sd = {installed_name(encoder, k): v for k, v in tensors.items()}
    own = encoder.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = sorted(f"{k}: file {tuple(v.shape)} vs encoder {tuple(own[k].shape)}"
                    for k, v in sd.items() if k in own and v.shape != own[k].shape)
    if missing or unexpected or shapes:
        raise EncoderWeightsMismatch(f"{source}: the encoder weights do not fit the encoder config: missing "
                                     f"{missing[:8]}, unexpected {unexpected[:8]}, wrong shape {shapes[:8]}")
    encoder.load_state_dict({k: v.to(own[k].dtype) for k, v in sd.items()}, strict=True)
    return encoder


def load_pretrained(cls, path: str | Path) -> nn.Module:
    """`cls.from_pretrained(path)` as float32, strictly: every weight must come from the folder.

    A folder written by the other major version (5.x writes flat names, which 4.57 would leave randomly
    initialised with only a warning) is recognised from its safetensors header and loaded with its names
    mapped; anything else missing or left over is an error."""
    from transformers.utils import logging as hf_logging
    path = Path(path)
    config = cls.config_class.from_pretrained(str(path))
    with torch.device("meta"):                 # the layout only: no memory, no random init
        nested = is_nested(cls(config))
    names = safetensors_names(path)
    if names and any(n.startswith(NEST) != nested for n in names):
        model = cls(config)
        return load_into(model, read_safetensors(path), str(path)).float()
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()          # a 'Loading weights' bar on every chat start is noise
    try:
        model, info = cls.from_pretrained(str(path), config=config, dtype=torch.float32, output_loading_info=True)
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    bad = {k: sorted(info.get(k) or ()) for k in ("missing_keys", "unexpected_keys", "mismatched_keys")}
    if any(bad.values()):
        raise EncoderWeightsMismatch(f"{path}: the encoder weights do not fit its config.json: "
                                     + ", ".join(f"{k} {v[:8]}" for k, v in bad.items() if v))
    return model.float()


def safetensors_names(path: Path) -> list[str] | None:
    """Weight names of a folder's safetensors file(s), from the headers only; None when it has none."""
    index = path / "model.safetensors.index.json"
    if index.exists():
        return sorted(json.loads(index.read_text())["weight_map"])
    if (path / "model.safetensors").exists():
        with safe_open(str(path / "model.safetensors"), "pt") as f:
            return list(f.keys())
    return None


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """Every tensor of a folder's model.safetensors, single or sharded (model.safetensors.index.json)."""
    from safetensors.torch import load_file
    index = path / "model.safetensors.index.json"
    files = sorted(set(json.loads(index.read_text())["weight_map"].values())) if index.exists() else ["model.safetensors"]
    sd = {}
    for f in files:
        sd.update(load_file(str(path / f)))
    return sd


def flat_encoder_names(sd: dict, prefix: str = "vision_encoder.encoder.") -> dict:
    """A model state dict whose encoder weights may carry 4.x names -> the flat names our model reports."""
    nested = prefix + NEST
    return {(prefix + k[len(nested):] if k.startswith(nested) else k): v for k, v in sd.items()}


def keep_flat_names(wrapper: nn.Module, attr: str = "encoder") -> None:
    """Make `wrapper.state_dict()` name the encoder's weights in the flat form under every version, and let
    `wrapper.load_state_dict` accept either form, so model folders and checkpoints move between versions."""
    inner = f"{attr}."

    def to_flat(module, state_dict, prefix, local_metadata):
        start = prefix + inner + NEST
        for key in [k for k in state_dict if k.startswith(start)]:
            state_dict[prefix + inner + key[len(start):]] = state_dict.pop(key)

    def to_installed(module, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys, error_msgs):
        encoder = getattr(module, attr)
        start = prefix + inner
        for key in [k for k in state_dict if k.startswith(start)]:
            name = installed_name(encoder, key[len(start):])
            if start + name != key:
                state_dict[start + name] = state_dict.pop(key)

    wrapper.register_state_dict_post_hook(to_flat)
    wrapper.register_load_state_dict_pre_hook(to_installed)
