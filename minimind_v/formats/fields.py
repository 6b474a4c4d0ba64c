"""Config field mapping between our `ModelConfig` and the original MiniMind-V `VLMConfig` field names.

The original describes a model with a flat dict (`hidden_size`, `use_moe`, `image_ids`, `image_hidden_size`,
`image_token_len`, ...) and keeps the vision encoder outside the checkpoint. We write that dict next to a
reference `.pth` and as the core of an exported Hugging Face config.json, and read it back from either.
What the original hard-wires (64 visual tokens from 256 SigLIP2 patches merged 4 at a time, no LayerNorm in
the projector) is filled in when a file does not say otherwise:

    image_size / patch_size = sqrt(image_token_len * merge)      (sqrt(64 * 4) = 16 patches per side)
"""
from __future__ import annotations

import math

from ..config import ModelConfig, VisionConfig
from ..hf.configuration_minimind_v import ORIGINAL_YARN

# Siglip2VisionConfig fields that define the architecture (the rest are transformers bookkeeping).
SIGLIP_FIELDS = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                 "num_patches", "image_size", "patch_size", "hidden_act", "layer_norm_eps", "attention_dropout", "vision_use_head")


def siglip_fields(vision_config) -> dict:
    """A Siglip2VisionConfig (object or dict) -> the architecture fields only, JSON-ready."""
    d = vision_config if isinstance(vision_config, dict) else vision_config.to_dict()
    return {k: d[k] for k in SIGLIP_FIELDS if k in d}


def original_config(cfg: ModelConfig) -> dict:
    """Our config in the original's field names (what `VLMConfig(**d)` accepts)."""
    return {
        "model_type": "minimind-v",
        "hidden_size": cfg.hidden_size, "num_hidden_layers": cfg.num_hidden_layers,
        "num_attention_heads": cfg.num_attention_heads, "num_key_value_heads": cfg.num_key_value_heads,
        "head_dim": cfg.head_dim, "intermediate_size": cfg.intermediate_size, "vocab_size": cfg.vocab_size,
        "hidden_act": "silu", "rms_norm_eps": cfg.rms_norm_eps, "rope_theta": cfg.rope_theta,
        "max_position_embeddings": cfg.max_position_embeddings, "rope_scaling": cfg.rope_scaling,
        "inference_rope_scaling": cfg.rope_scaling is not None, "dropout": cfg.dropout, "flash_attn": True,
        "tie_word_embeddings": cfg.tie_word_embeddings, "bos_token_id": cfg.bos_token_id,
        "eos_token_id": cfg.eos_token_id, "pad_token_id": cfg.pad_token_id,
        "use_moe": cfg.use_moe, "num_experts": cfg.num_experts, "num_experts_per_tok": cfg.num_experts_per_tok,
        "moe_intermediate_size": cfg.moe_intermediate_size, "norm_topk_prob": cfg.norm_topk_prob,
        "router_aux_loss_coef": cfg.router_aux_loss_coef,
        "image_special_token": "<|image_pad|>", "image_ids": [cfg.image_token_id],
        "image_hidden_size": cfg.vision.hidden_size, "image_token_len": cfg.image_token_len,
    }


def rope_scaling_of(d: dict) -> dict | None:
    """YaRN settings from an original config (`rope_scaling`, or just `inference_rope_scaling: true`) or
    from our exported one (`yarn_scaling`)."""
    scaling = d.get("rope_scaling") or d.get("yarn_scaling")
    if scaling is None and d.get("inference_rope_scaling"):
        scaling = dict(ORIGINAL_YARN)
    return dict(scaling) if scaling else None


def default_vision(d: dict, patch_size: int = 16) -> dict:
    """The vision block the original implies: a square of (tokens * merge) patches of `patch_size`."""
    merge = int(d.get("merge", 4))
    tokens = int(d.get("image_token_len", 64))
    side = math.isqrt(tokens * merge)
    if side * side != tokens * merge:
        raise ValueError(f"image_token_len {tokens} x merge {merge} is not a square number of patches")
    return dict(path=None, siglip=None, hidden_size=int(d.get("image_hidden_size", 768)),
                patch_size=patch_size, image_size=side * patch_size)


def model_config_from_original(d: dict, vision: dict | None = None) -> ModelConfig:
    """A config in the original's field names (a `*_config.json`, or an HF config.json) -> ModelConfig.

    `vision` overrides the implied vision block (path / siglip / sizes). Values our model cannot
    reproduce are refused rather than ignored."""
    act = d.get("hidden_act", "silu")
    if act != "silu":
        raise ValueError(f"hidden_act={act!r}: MiniMind uses SwiGLU with silu; this config is not a MiniMind-V one")
    if d.get("model_type") not in (None, "minimind-v", "minimind"):
        raise ValueError(f"model_type={d.get('model_type')!r} is not a MiniMind-V config")
    ids = d.get("image_ids")
    if ids is not None and len(ids) != 1:
        raise ValueError(f"image_ids={ids}: exactly one image placeholder id is supported")
    flat = dict(d)
    flat["rope_scaling"] = rope_scaling_of(d)
    flat["vision"] = VisionConfig(**(vision or default_vision(d)))
    return ModelConfig.from_dict(flat)
