"""MiniMind-V for `transformers`: the model class of an exported folder (remote code, `trust_remote_code=True`).

This file is copied verbatim into every folder written by `minimind-v export --to hf`; it imports only
torch and transformers (never `minimind_v`), so the folder works wherever `transformers` is installed:

    model = AutoModelForCausalLM.from_pretrained(DIR, trust_remote_code=True)
    out = model.generate(input_ids, pixel_values=pixel_values, max_new_tokens=64, do_sample=False)

It is an independent implementation of the same arithmetic as `minimind_v.model` (and the original
MiniMind-V): pre-norm decoder, GQA attention with RMSNorm on q and k per head and rotate-half RoPE
(optionally YaRN-scaled), SwiGLU or a top-k MoE of SwiGLU experts, tied lm_head; a frozen
Siglip2VisionModel whose `last_hidden_state` (N, P, D) is merged `merge` patches at a time and projected
(Linear -> GELU -> Linear) into the `image_token_len` placeholder embeddings of each picture, in order.

Parameter names equal the original's (`model.layers.0.self_attn.q_proj.weight`, `vision_proj.mlp.0.weight`);
the encoder's are `vision_encoder.vision_model.*`, as the original (transformers 4) names a Siglip2VisionModel
held in `vision_encoder`, whichever transformers version loads the folder.
The lm_head is tied to the embedding and declared as such, so safetensors serialisation works
(`save_pretrained` with the default `safe_serialization=True`).

Generation uses the standard `GenerationMixin` with a transformers KV cache: `pixel_values` is used in
the prefill only (the decode steps carry no image placeholders). Positions count real tokens only, so a
left-padded batch gives each row the answer it gets alone.
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from transformers import GenerationMixin, PreTrainedModel
from transformers.modeling_outputs import CausalLMOutputWithPast

from .configuration_minimind_v import MiniMindVConfig

try:  # transformers >= 5: these skip tensors that were already loaded from the checkpoint
    from transformers import initialization as _init
except ImportError:  # pragma: no cover - transformers 4.x
    from torch.nn import init as _init

# transformers 5 renamed the cache argument/output field from `past_key_values` to `cache`
_CACHE_FIELD = "cache" if "cache" in CausalLMOutputWithPast.__dataclass_fields__ else "past_key_values"


class MiniMindRMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps), computed in fp32."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x):
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def rope_inverse_frequencies(config: MiniMindVConfig):
    """theta^(-2i/head_dim) per rotated pair, YaRN-adjusted when configured; and the cos/sin scale.

    YaRN ({"factor": s, "original_max_position_embeddings": L, "beta_fast": 32, "beta_slow": 1,
    "attention_factor": a}), applied when max_position_embeddings > L: pairs turning fewer than
    beta_slow times over L are divided by s, those turning more than beta_fast times are kept, with a
    linear ramp between; cos and sin are multiplied by a.
    """
    hd, theta = config.head_dim, config.rope_theta
    inv = 1.0 / (theta ** (torch.arange(0, hd, 2).float() / hd))
    scaling, attn = config.yarn_scaling, 1.0
    if scaling:
        orig = scaling.get("original_max_position_embeddings", 2048)
        factor = scaling.get("factor", 16)
        attn = scaling.get("attention_factor", 1.0)
        if config.max_position_embeddings > orig:
            def dim_for(turns):          # index of the pair that turns `turns` times over L positions
                return hd * math.log(orig / (turns * 2 * math.pi)) / (2 * math.log(theta))
            low = max(math.floor(dim_for(scaling.get("beta_fast", 32.0))), 0)
            high = min(math.ceil(dim_for(scaling.get("beta_slow", 1.0))), hd // 2 - 1)
            ramp = ((torch.arange(hd // 2).float() - low) / max(high - low, 1e-3)).clamp(0, 1)
            inv = inv * (1 - ramp + ramp / factor)
    return inv, attn


def rotate(x, cos, sin):
    """Rotate-half RoPE: x * cos + cat(-x2, x1) * sin; x (B, H, T, D), cos/sin (B, 1, T, D)."""
    half = x.shape[-1] // 2
    return (x * cos + torch.cat([-x[..., half:], x[..., :half]], -1) * sin).to(x.dtype)


class MiniMindAttention(nn.Module):
    def __init__(self, config: MiniMindVConfig, layer_idx: int):
        super().__init__()
        self.layer_idx = layer_idx
        self.n_heads, self.n_kv, self.hd = config.num_attention_heads, config.num_key_value_heads, config.head_dim
        h = config.hidden_size
        self.q_proj = nn.Linear(h, self.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(h, self.n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(h, self.n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.hd, h, bias=False)
        self.q_norm = MiniMindRMSNorm(self.hd, config.rms_norm_eps)
        self.k_norm = MiniMindRMSNorm(self.hd, config.rms_norm_eps)
        self.dropout = config.dropout

    def forward(self, x, cos, sin, mask, cache):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.n_heads, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.n_kv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        if cache is not None:
            k, v = cache.update(k, v, self.layer_idx)
        if self.n_heads > self.n_kv:
            k = k.repeat_interleave(self.n_heads // self.n_kv, dim=1)
            v = v.repeat_interleave(self.n_heads // self.n_kv, dim=1)
        drop = self.dropout if self.training else 0.0
        if mask is None:   # a prefill from position 0 (causal) or a one-token step (sees every cached key)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, dropout_p=drop)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class MiniMindMLP(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MiniMindMoE(nn.Module):
    """softmax router -> top-k experts (weights renormalised when norm_topk_prob) -> weighted sum."""

    def __init__(self, config: MiniMindVConfig):
        super().__init__()
        self.k, self.n, self.norm_topk = config.num_experts_per_tok, config.num_experts, config.norm_topk_prob
        self.coef = config.router_aux_loss_coef
        self.gate = nn.Linear(config.hidden_size, config.num_experts, bias=False)
        self.experts = nn.ModuleList(MiniMindMLP(config.hidden_size, config.moe_intermediate_size)
                                     for _ in range(config.num_experts))
        self.aux_loss = None

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = F.softmax(self.gate(flat).float(), dim=-1)
        top_w, top_i = probs.topk(self.k, dim=-1)
        if self.norm_topk:
            top_w = top_w / (top_w.sum(-1, keepdim=True) + 1e-20)
        out = torch.zeros_like(flat)
        for e, expert in enumerate(self.experts):
            rows, slot = (top_i == e).nonzero(as_tuple=True)
            if rows.numel():
                out = out.index_add(0, rows, expert(flat[rows]) * top_w[rows, slot, None].to(flat.dtype))
        self.aux_loss = None
        if self.training and self.coef > 0:   # coef * E * sum_e(fraction routed to e * mean router prob of e)
            routed = F.one_hot(top_i, self.n).float().sum(1).mean(0) / self.k
            self.aux_loss = self.coef * self.n * (routed * probs.mean(0)).sum()
        return out.view(shape)


class MiniMindBlock(nn.Module):
    def __init__(self, config: MiniMindVConfig, layer_idx: int):
        super().__init__()
        self.self_attn = MiniMindAttention(config, layer_idx)
        self.input_layernorm = MiniMindRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.post_attention_layernorm = MiniMindRMSNorm(config.hidden_size, config.rms_norm_eps)
        self.mlp = (MiniMindMoE(config) if config.use_moe
                    else MiniMindMLP(config.hidden_size, config.intermediate_size))

    def forward(self, x, cos, sin, mask, cache):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache)
        return x + self.mlp(self.post_attention_layernorm(x))


class MiniMindDecoder(nn.Module):
    """The original's `model.*`: embedding, blocks, final norm."""

    def __init__(self, config: MiniMindVConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size)
        self.layers = nn.ModuleList(MiniMindBlock(config, i) for i in range(config.num_hidden_layers))
        self.norm = MiniMindRMSNorm(config.hidden_size, config.rms_norm_eps)


class MiniMindVisionProjector(nn.Module):
    """(N, P, D) -> concat `merge` consecutive patches (N, P/merge, merge*D) -> [LayerNorm] -> Linear, GELU, Linear
    [-> + a learned vector per visual-token place]."""

    def __init__(self, config: MiniMindVConfig):
        super().__init__()
        self.merge = config.merge
        width = config.image_hidden_size * config.merge
        first = [nn.LayerNorm(width)] if config.projector_norm else []     # 0420 layout: mlp.0 LayerNorm, mlp.1/3
        self.mlp = nn.Sequential(*first, nn.Linear(width, config.hidden_size), nn.GELU(),
                                 nn.Linear(config.hidden_size, config.hidden_size))
        self.pos_embed = (nn.Parameter(torch.zeros(config.image_token_len, config.hidden_size))
                          if getattr(config, "visual_pos_embed", False) else None)

    def forward(self, feats):
        n, p, d = feats.shape
        x = self.mlp(feats.reshape(n, p // self.merge, d * self.merge))
        return x if self.pos_embed is None else x + self.pos_embed.to(x.dtype)


def attention_mask_4d(attention_mask, t: int, past: int, device):
    """Boolean (B, 1, t, past+t): causal from absolute position past+i, padded keys hidden; None when the
    plain causal / full kernel is exact (no padding, and either no cache yet or a single new token)."""
    total = past + t
    padded = attention_mask is not None and not bool(attention_mask[:, -total:].all())
    if not padded and (past == 0 or t == 1):
        return None
    q_idx = torch.arange(past, total, device=device)[:, None]
    k_idx = torch.arange(total, device=device)[None, :]
    mask = (k_idx <= q_idx)[None, None]
    if padded:
        keys = attention_mask[:, -total:].bool()[:, None, None, :]
        # a padded query that saw no key would give NaN; let it see itself (its output is never used)
        mask = (mask & keys) | (k_idx == q_idx)[None, None]
    return mask


def build_vision_encoder(vision_config: dict, kind: str = "siglip2") -> nn.Module:
    """A Siglip2VisionModel (or, kind "siglip", the 0420 release's SiglipVisionModel) whose weights are named
    `vision_model.*` under every transformers version: 4.x nests them so itself; 5.x flattened the class
    (`embeddings.*`), so it is held one level down."""
    if kind == "siglip":
        from transformers import SiglipVisionConfig as Config, SiglipVisionModel as Model
    else:
        from transformers import Siglip2VisionConfig as Config, Siglip2VisionModel as Model
    encoder = Model(Config(**vision_config))
    if hasattr(encoder, "vision_model"):
        return encoder
    holder = nn.Module()
    holder.vision_model = encoder
    return holder


class MiniMindVForCausalLM(PreTrainedModel, GenerationMixin):
    config_class = MiniMindVConfig
    base_model_prefix = "model"
    main_input_name = "input_ids"
    _no_split_modules = ["MiniMindBlock"]
    _supports_sdpa = True
    # 5.x reads this as target -> source; 4.x iterates it and sees the tied name, as from a list
    _tied_weights_keys = {"lm_head.weight": "model.embed_tokens.weight"}

    def __init__(self, config: MiniMindVConfig):
        super().__init__(config)
        self.model = MiniMindDecoder(config)
        self.lm_head = nn.Linear(config.hidden_size, config.vocab_size, bias=False)
        self.vision_proj = MiniMindVisionProjector(config)
        kind = getattr(config, "vision_encoder_class", "siglip2")
        self.vision_encoder = build_vision_encoder(config.vision_config, kind) if config.vision_config else None
        self.post_init()

    # ---- embeddings (what transformers' utilities expect) ----
    def get_input_embeddings(self):
        return self.model.embed_tokens

    def set_input_embeddings(self, value):
        self.model.embed_tokens = value

    def get_output_embeddings(self):
        return self.lm_head

    def set_output_embeddings(self, value):
        self.lm_head = value

    def _init_weights(self, module):
        """Fresh init (only for weights a checkpoint does not provide): N(0, 0.02) matrices, unit norms."""
        if isinstance(module, (nn.Linear, nn.Embedding)):
            _init.normal_(module.weight, mean=0.0, std=0.02)
            if getattr(module, "bias", None) is not None:
                _init.zeros_(module.bias)
        elif isinstance(module, MiniMindRMSNorm):
            _init.ones_(module.weight)
        elif isinstance(module, nn.LayerNorm):
            _init.ones_(module.weight)
            _init.zeros_(module.bias)

    # ---- vision ----
    def encode_images(self, pixel_values, pixel_attention_mask=None, spatial_shapes=None):
        """Pictures -> (N, image_token_len, hidden). `pixel_values` is what the bundled image processor makes:
        (N, P, 3*p*p) patches for a SigLIP2 encoder (full square grid, or NaFlex with `pixel_attention_mask`
        and `spatial_shapes`), (N, 3, H, W) for a SigLIP v1 one. The original MiniMind-V's own form is taken
        too: the dict / BatchFeature its processor returns, with its encoder set as `vision_encoder`."""
        if self.vision_encoder is None:
            raise ValueError("this MiniMind-V folder has no vision encoder (vision_config is null)")
        if hasattr(pixel_values, "keys"):           # {'pixel_values': ..., ['pixel_attention_mask', 'spatial_shapes']}
            pixel_attention_mask = pixel_values.get("pixel_attention_mask", pixel_attention_mask)
            spatial_shapes = pixel_values.get("spatial_shapes", spatial_shapes)
            pixel_values = pixel_values["pixel_values"]
        siglip = self.vision_encoder
        if not isinstance(siglip, PreTrainedModel):
            siglip = siglip.vision_model
        dtype = next(siglip.parameters()).dtype
        with torch.no_grad():     # frozen; last_hidden_state (not pooled)
            if "Siglip2" not in type(siglip).__name__:           # SigLIP v1: a Conv2d over the whole picture
                if pixel_values.dim() == 3:                       # patches (N, g*g, p*p*3) -> (N, 3, H, W)
                    n, count, _ = pixel_values.shape
                    g, p = math.isqrt(count), siglip.config.patch_size
                    pixel_values = pixel_values.reshape(n, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(
                        n, 3, g * p, g * p)
                feats = siglip(pixel_values=pixel_values.to(dtype)).last_hidden_state
            else:
                n, p, _ = pixel_values.shape
                if spatial_shapes is None:                        # the full square grid
                    side = int(round(p ** 0.5))
                    spatial_shapes = torch.tensor([[side, side]], device=pixel_values.device).expand(n, 2)
                    pixel_attention_mask = torch.ones(n, p, dtype=torch.long, device=pixel_values.device)
                feats = siglip(pixel_values=pixel_values.to(dtype), pixel_attention_mask=pixel_attention_mask,
                               spatial_shapes=spatial_shapes).last_hidden_state
        return self.vision_proj(feats.to(self.vision_proj.mlp[0].weight.dtype))

    def splice(self, input_ids, embeds, visual):
        """Put the visual tokens into the image-placeholder positions, in order (64 per picture)."""
        image_id = self.config.image_ids[0]
        mask = input_ids == image_id
        n_pos, n_vis = int(mask.sum()), visual.shape[0] * visual.shape[1]
        if n_pos != n_vis:
            raise ValueError(f"{n_pos} image-placeholder tokens (id {image_id}) but {visual.shape[0]} picture(s) x "
                             f"{visual.shape[1]} tokens; each <image> must become {self.config.image_token_len} "
                             f"x {self.config.image_special_token}")
        return embeds.masked_scatter(mask.unsqueeze(-1), visual.to(embeds.dtype))

    # ---- forward ----
    def forward(self, input_ids=None, attention_mask=None, position_ids=None, cache=None, past_key_values=None,
                inputs_embeds=None, labels=None, use_cache=None, pixel_values=None, logits_to_keep=0, **kwargs):
        cache = cache if cache is not None else past_key_values
        use_cache = self.config.use_cache if use_cache is None else use_cache
        if inputs_embeds is None:
            inputs_embeds = self.model.embed_tokens(input_ids)
            if pixel_values is not None and bool((input_ids == self.config.image_ids[0]).any()):
                visual = self.encode_images(pixel_values, kwargs.get("pixel_attention_mask"),
                                            kwargs.get("spatial_shapes"))
                inputs_embeds = self.splice(input_ids, inputs_embeds, visual)
        if use_cache and cache is None and not self.training:
            from transformers import DynamicCache
            cache = DynamicCache()
        b, t, _ = inputs_embeds.shape
        past = cache.get_seq_length() if cache is not None else 0
        if position_ids is None:
            if attention_mask is not None:   # real tokens only: left padding does not shift positions
                position_ids = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)[:, -t:]
            else:
                position_ids = torch.arange(past, past + t, device=inputs_embeds.device)[None].expand(b, t)
        inv, scale = rope_inverse_frequencies(self.config)
        freqs = position_ids.float()[..., None] * inv.to(inputs_embeds.device)          # (B, T, D/2)
        cos = (torch.cat([freqs.cos(), freqs.cos()], -1) * scale)[:, None].to(inputs_embeds.dtype)
        sin = (torch.cat([freqs.sin(), freqs.sin()], -1) * scale)[:, None].to(inputs_embeds.dtype)
        mask = attention_mask_4d(attention_mask, t, past, inputs_embeds.device)
        h = F.dropout(inputs_embeds, self.config.dropout, self.training) if self.config.dropout else inputs_embeds
        want_states = kwargs.get("output_hidden_states", self.config.output_hidden_states)
        states = [h] if want_states else None
        # on CUDA no cuDNN attention: it builds a plan for every new key length, i.e. every decode step
        no_cudnn = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]
        with sdpa_kernel(no_cudnn) if h.device.type == "cuda" else contextlib.nullcontext():
            for layer in self.model.layers:
                h = layer(h, cos, sin, mask, cache)
                if want_states:
                    states.append(h)
        h = self.model.norm(h)
        if want_states:
            states[-1] = h        # as in transformers' decoders: the last entry is after the final norm
        logits = self.lm_head(h[:, -logits_to_keep:] if logits_to_keep else h)
        loss = None
        if labels is not None:
            loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(),
                                   labels[:, 1:].reshape(-1), ignore_index=-100)
            aux = [l.mlp.aux_loss for l in self.model.layers
                   if isinstance(l.mlp, MiniMindMoE) and l.mlp.aux_loss is not None]
            if aux:
                loss = loss + sum(aux)
        out = {"loss": loss, "logits": logits, "hidden_states": tuple(states) if want_states else None,
               _CACHE_FIELD: cache if use_cache else None}
        return CausalLMOutputWithPast(**out)
