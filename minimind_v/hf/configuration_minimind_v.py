"""Configuration of an exported MiniMind-V model, for `transformers` (remote code, `trust_remote_code=True`).

This file is copied verbatim into every folder written by `minimind-v export --to hf`, so it must not
import `minimind_v`: only `transformers`. Field names are the original MiniMind-V `VLMConfig` names
(`hidden_size`, `image_ids`, `image_hidden_size`, ...), so a config.json written by the original code
reads into this class too, and `minimind-v convert` can read ours back. The extra fields describe the
vision side that the original hard-wired or kept outside the checkpoint:

    vision_config     the Siglip2VisionConfig of the bundled encoder (a dict), or None for a text-only folder
    merge             consecutive patch features concatenated per visual token (4: 256 patches -> 64 tokens)
    projector_norm    LayerNorm on the merged features before the projector MLP (the B/32 variant)
    visual_pos_embed  a learned vector per visual-token place added after the projector (the demo's models)
    image_size        pictures are resized to image_size x image_size before patching
    yarn_scaling      the original's `rope_scaling` dict (YaRN), under another name: transformers 5 rewrites
                      any attribute called `rope_scaling` into its own `rope_parameters` format on load/save.
                      `inference_rope_scaling` (the original's switch) is kept in step with it.
"""
from __future__ import annotations

import math

try:  # transformers >= 5 calls it PreTrainedConfig; 4.x only has PretrainedConfig
    from transformers import PreTrainedConfig as _BaseConfig
except ImportError:  # pragma: no cover - transformers 4.x
    from transformers import PretrainedConfig as _BaseConfig


# What the original switches on with `inference_rope_scaling=True` (YaRN, 2048 -> 32768 positions).
ORIGINAL_YARN = {"type": "yarn", "factor": 16, "original_max_position_embeddings": 2048, "beta_fast": 32,
                 "beta_slow": 1, "attention_factor": 1.0}


class MiniMindVConfig(_BaseConfig):
    model_type = "minimind-v"

    def __init__(self, hidden_size=768, num_hidden_layers=8, num_attention_heads=8, num_key_value_heads=4,
                 head_dim=None, intermediate_size=None, vocab_size=6400, hidden_act="silu", rms_norm_eps=1e-6,
                 rope_theta=1e6, max_position_embeddings=32768, yarn_scaling=None, inference_rope_scaling=False,
                 dropout=0.0, flash_attn=True, use_moe=False, num_experts=4, num_experts_per_tok=1,
                 moe_intermediate_size=None, norm_topk_prob=True, router_aux_loss_coef=5e-4,
                 image_special_token="<|image_pad|>", image_ids=(12,), image_hidden_size=768, image_token_len=64,
                 vision_config=None, merge=4, projector_norm=False, visual_pos_embed=False, image_size=256,
                 bos_token_id=1, eos_token_id=2, pad_token_id=0, tie_word_embeddings=True, **kwargs):
        self.hidden_size = hidden_size
        self.num_hidden_layers = num_hidden_layers
        self.num_attention_heads = num_attention_heads
        self.num_key_value_heads = num_key_value_heads
        self.head_dim = head_dim or hidden_size // num_attention_heads
        # SwiGLU width as in the original: ceil(hidden * pi / 64) * 64 (768 -> 2432)
        self.intermediate_size = intermediate_size or math.ceil(hidden_size * math.pi / 64) * 64
        self.vocab_size = vocab_size
        self.hidden_act = hidden_act
        self.rms_norm_eps = rms_norm_eps
        self.rope_theta = rope_theta
        self.max_position_embeddings = max_position_embeddings
        # an original config.json names it `rope_scaling`; read it, but never store it under that name
        yarn_scaling = yarn_scaling or kwargs.pop("rope_scaling", None)
        if yarn_scaling is None and inference_rope_scaling:
            yarn_scaling = dict(ORIGINAL_YARN)
        self.yarn_scaling = dict(yarn_scaling) if yarn_scaling else None
        self.inference_rope_scaling = bool(self.yarn_scaling)
        self.dropout = dropout
        self.flash_attn = flash_attn
        self.use_moe = use_moe
        self.num_experts = num_experts
        self.num_experts_per_tok = num_experts_per_tok
        self.moe_intermediate_size = moe_intermediate_size or self.intermediate_size
        self.norm_topk_prob = norm_topk_prob
        self.router_aux_loss_coef = router_aux_loss_coef
        self.image_special_token = image_special_token
        self.image_ids = list(image_ids)
        self.image_hidden_size = image_hidden_size
        self.image_token_len = image_token_len
        self.vision_config = dict(vision_config) if vision_config is not None else None
        self.merge = merge
        self.projector_norm = projector_norm
        self.visual_pos_embed = visual_pos_embed
        self.image_size = image_size
        # transformers uses these for caches and generation
        self.use_cache = kwargs.pop("use_cache", True)
        super().__init__(bos_token_id=bos_token_id, eos_token_id=eos_token_id, pad_token_id=pad_token_id,
                         tie_word_embeddings=tie_word_embeddings, **kwargs)
        # transformers 5 may normalise these inside super().__init__; keep the values we were given
        self.bos_token_id, self.eos_token_id, self.pad_token_id = bos_token_id, eos_token_id, pad_token_id
        self.tie_word_embeddings = tie_word_embeddings
