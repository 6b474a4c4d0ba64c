"""Refuse a config that asks for an absurd model before a single tensor is allocated.

A model folder's `config.json` is input like any other: `num_hidden_layers: 100000` would otherwise
allocate until the machine's memory runs out (12 GB in a minute, then a crash) before anything says
why. `check_model_size` estimates the parameter count from the config alone, with the arithmetic of
model/llm.py, model/projector.py and a SigLIP encoder, and refuses anything beyond a generous bound
(`MAX_PARAMETERS`, 100x the largest recipe) with a message naming the field that makes it large.

    LLM per layer   = attention  h*(nq*d) + 2*h*(nkv*d) + (nq*d)*h
                    + FFN        3*h*f  (x experts, + router h*experts, with MoE)
    embedding       = vocab * h        (lm_head tied, else twice)
    projector       = (v*merge)*h + h*h
    encoder         = layers * (4*v^2 + 2*v*f_v) + patches*v     (when built from a config here)
"""
from __future__ import annotations

MAX_PARAMETERS = 20_000_000_000       # 80 GB in fp32; the largest recipe (MoE) has 201M


class ModelTooLarge(ValueError):
    """The config asks for a model far beyond any this toolkit trains or loads."""


def _positive(cfg, name: str) -> int:
    v = getattr(cfg, name)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise ModelTooLarge(f"config field {name} must be a positive integer, not {v!r}")
    return v


def estimate_parameters(cfg) -> dict[str, int]:
    """Parameter count by part, each keyed by the config fields that scale it."""
    h = _positive(cfg, "hidden_size")
    layers = _positive(cfg, "num_hidden_layers")
    nq = _positive(cfg, "num_attention_heads")
    nkv = _positive(cfg, "num_key_value_heads")
    d = _positive(cfg, "head_dim")
    vocab = _positive(cfg, "vocab_size")
    f = _positive(cfg, "intermediate_size")
    attn = h * nq * d * 2 + h * nkv * d * 2
    if cfg.use_moe:
        experts = _positive(cfg, "num_experts")
        ffn = 3 * h * _positive(cfg, "moe_intermediate_size") * experts + h * experts
    else:
        ffn = 3 * h * f
    parts = {
        "num_hidden_layers x (hidden_size, heads, intermediate_size)": layers * (attn + ffn),
        "vocab_size x hidden_size": vocab * h * (1 if cfg.tie_word_embeddings else 2),
    }
    vis = cfg.vision
    vw = vis.hidden_size if isinstance(vis.hidden_size, int) and vis.hidden_size > 0 else 0
    parts["vision hidden_size x merge (projector)"] = vw * cfg.merge * h + h * h
    if getattr(vis, "siglip", None):
        s = vis.siglip
        sw, sl, sf = (int(s.get(k, 0) or 0) for k in ("hidden_size", "num_hidden_layers", "intermediate_size"))
        sp = int(s.get("num_patches", 0) or 0)
        parts["vision.siglip (num_hidden_layers x hidden_size)"] = sl * (4 * sw * sw + 2 * sw * sf) + sp * sw
    patches = (vis.image_size // max(1, vis.patch_size)) ** 2 if vis.image_size and vis.patch_size else 0
    parts["vision image_size / patch_size (pixels per picture)"] = patches * 3 * vis.patch_size ** 2
    return parts


def check_model_size(cfg, limit: int = MAX_PARAMETERS) -> int:
    """The estimated parameter count; raises ModelTooLarge naming the field when it is over `limit`."""
    parts = estimate_parameters(cfg)
    total = sum(parts.values())
    if total > limit:
        worst = max(parts, key=parts.get)
        raise ModelTooLarge(
            f"the model config asks for about {total:,} parameters ({total * 4 / 2**30:,.0f} GiB in fp32), over "
            f"the limit of {limit:,}: {worst} alone gives {parts[worst]:,} (num_hidden_layers="
            f"{cfg.num_hidden_layers}, hidden_size={cfg.hidden_size}, vocab_size={cfg.vocab_size}); "
            f"is config.json damaged?")
    return total
