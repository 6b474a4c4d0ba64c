"""The MiniMind decoder-only language model.

Pre-norm transformer: RMSNorm -> GQA attention (RMSNorm on q and k per head, then rotate-half RoPE)
-> residual -> RMSNorm -> SwiGLU FFN (or a top-k MoE of SwiGLU experts) -> residual; final RMSNorm;
lm_head tied to the embedding. Parameter names equal the original's, so original checkpoints load
without renaming: `model.layers.3.self_attn.q_proj.weight`, `model.layers.3.mlp.experts.2.up_proj.weight`.

Attention masks, in order of preference:
  * nothing given, no cache          -> SDPA `is_causal=True` (the fast kernel),
  * `seq_ids` (packing)              -> block-diagonal causal: a token sees earlier tokens of its own row;
                                        on the CPU one causal SDPA call per row instead of a mask over
                                        the whole packed sequence (`row_segments`), since the mask
                                        computes every query-key pair of the sequence and the causal
                                        kernel only the lower triangle of each row (timings:
                                        benchmarks/packed_attention.py, docs/perf.md),
  * `key_mask` (left-padded batches) -> causal, and padded keys are never attended,
  * a KV cache                       -> causal with the cache offset.

On CUDA, attention runs inside `sdpa_backends`: flash / memory-efficient kernels, never cuDNN's. Recent
torch tries cuDNN first on Hopper and newer, and cuDNN builds an execution plan for every new shape, which
costs far more than the attention itself; packed or pad-to-longest batches bring a new shape nearly every
step (docs/perf.md has the numbers).
"""
from __future__ import annotations

import contextlib
import math

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel

from ..config import ModelConfig

NO_CUDNN = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]   # SDPA kernels used on CUDA


def sdpa_backends(device: torch.device):
    """Context for attention calls: on CUDA, SDPA kernels without a per-shape cost (no cuDNN)."""
    return sdpa_kernel(NO_CUDNN) if device.type == "cuda" else contextlib.nullcontext()


class RMSNorm(nn.Module):
    """weight * x / sqrt(mean(x^2) + eps), computed in fp32."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        return self.weight * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)).type_as(x)


def rope_frequencies(head_dim: int, end: int, theta: float, scaling: dict | None = None):
    """cos/sin tables of shape (end, head_dim), rotate-half layout: cos = cat(cos(f), cos(f)).

    f_i = pos * theta^(-2i/head_dim). With YaRN scaling ({"type": "yarn", "factor": s,
    "original_max_position_embeddings": L, "beta_fast": 32, "beta_slow": 1, "attention_factor": a})
    and `end > L`, frequencies whose wavelength exceeds the original context are divided by s, with a
    linear ramp between the dims that complete beta_fast and beta_slow turns over L; cos/sin are
    multiplied by a.
    """
    inv = 1.0 / (theta ** (torch.arange(0, head_dim, 2).float() / head_dim))
    attn = 1.0
    if scaling:
        orig = scaling.get("original_max_position_embeddings", 2048)
        factor = scaling.get("factor", 16)
        beta_fast, beta_slow = scaling.get("beta_fast", 32.0), scaling.get("beta_slow", 1.0)
        attn = scaling.get("attention_factor", 1.0)
        if end > orig:
            # index of the dim that turns `b` times over the original context
            def dim_for(b):
                return head_dim * math.log(orig / (b * 2 * math.pi)) / (2 * math.log(theta))
            low = max(math.floor(dim_for(beta_fast)), 0)
            high = min(math.ceil(dim_for(beta_slow)), head_dim // 2 - 1)
            ramp = ((torch.arange(head_dim // 2).float() - low) / max(high - low, 1e-3)).clamp(0, 1)
            inv = inv * (1 - ramp + ramp / factor)
    f = torch.outer(torch.arange(end).float(), inv)
    cos = torch.cat([f.cos(), f.cos()], -1) * attn
    sin = torch.cat([f.sin(), f.sin()], -1) * attn
    return cos, sin


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: (B, H, T, D); cos/sin: (B, 1, T, D)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], -1)
    return (x * cos + rotated * sin).to(x.dtype)


class KVCache:
    """Preallocated keys/values for every layer: (B, n_kv, max_len, head_dim); no concat per token."""

    def __init__(self, cfg: ModelConfig, batch: int, max_len: int, device, dtype):
        shape = (batch, cfg.num_key_value_heads, max_len, cfg.head_dim)
        self.k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.num_hidden_layers)]
        self.pos = 0            # tokens already written
        self.max_len = max_len

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        t = k.shape[2]
        if self.pos + t > self.max_len:
            raise ValueError(f"KV cache full: {self.pos} + {t} > {self.max_len}")
        self.k[layer][:, :, self.pos:self.pos + t] = k
        self.v[layer][:, :, self.pos:self.pos + t] = v
        end = self.pos + t
        return self.k[layer][:, :, :end], self.v[layer][:, :, :end]


class Attention(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.n_heads, self.n_kv, self.hd = cfg.num_attention_heads, cfg.num_key_value_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.hidden_size, self.n_heads * self.hd, bias=False)
        self.k_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=False)
        self.v_proj = nn.Linear(cfg.hidden_size, self.n_kv * self.hd, bias=False)
        self.o_proj = nn.Linear(self.n_heads * self.hd, cfg.hidden_size, bias=False)
        self.q_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.k_norm = RMSNorm(self.hd, cfg.rms_norm_eps)
        self.dropout = cfg.dropout

    def forward(self, x, cos, sin, mask, cache: KVCache | None, layer: int):
        b, t, _ = x.shape
        q = self.q_norm(self.q_proj(x).view(b, t, self.n_heads, self.hd)).transpose(1, 2)
        k = self.k_norm(self.k_proj(x).view(b, t, self.n_kv, self.hd)).transpose(1, 2)
        v = self.v_proj(x).view(b, t, self.n_kv, self.hd).transpose(1, 2)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        if cache is not None:
            k, v = cache.write(layer, k, v)
        rep = self.n_heads // self.n_kv
        # CPU kernels share each k/v head among its query heads without copying (no k/v copy per step, so
        # less memory traffic in decode); CUDA's masked kernels need the copied heads
        gqa = rep > 1 and x.device.type == "cpu"
        if rep > 1 and not gqa:
            k = k.repeat_interleave(rep, dim=1)
            v = v.repeat_interleave(rep, dim=1)
        drop = self.dropout if self.training else 0.0
        if isinstance(mask, list):   # packed rows on the CPU: causal attention within each row
            out = torch.cat([
                torch.cat([F.scaled_dot_product_attention(q[i:i + 1, :, a:a + n], k[i:i + 1, :, a:a + n],
                                                          v[i:i + 1, :, a:a + n], is_causal=True,
                                                          dropout_p=drop, enable_gqa=gqa)
                           for a, n in segs], dim=2)
                for i, segs in enumerate(mask)])
        elif mask is None:   # no cache (causal from 0) or a one-token decode step (sees every cached key)
            out = F.scaled_dot_product_attention(q, k, v, is_causal=t > 1, dropout_p=drop, enable_gqa=gqa)
        else:
            out = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=drop, enable_gqa=gqa)
        return self.o_proj(out.transpose(1, 2).reshape(b, t, -1))


class FeedForward(nn.Module):
    """SwiGLU: down(silu(gate(x)) * up(x))."""

    def __init__(self, hidden: int, inter: int):
        super().__init__()
        self.gate_proj = nn.Linear(hidden, inter, bias=False)
        self.down_proj = nn.Linear(inter, hidden, bias=False)
        self.up_proj = nn.Linear(hidden, inter, bias=False)

    def forward(self, x):
        return self.down_proj(F.silu(self.gate_proj(x)) * self.up_proj(x))


class MoEFeedForward(nn.Module):
    """Top-k mixture of SwiGLU experts with a softmax router and a load-balancing loss.

    weights = softmax(gate(x)); the top-k are kept and, when norm_topk_prob, renormalised to sum 1 (so
    with k = 1 the chosen expert's weight is exactly 1; this matches the reference fixture logits);
    aux = coef * E * sum_e(fraction_routed_e * mean_prob_e).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.k, self.n, self.norm_topk = cfg.num_experts_per_tok, cfg.num_experts, cfg.norm_topk_prob
        self.coef = cfg.router_aux_loss_coef
        self.gate = nn.Linear(cfg.hidden_size, cfg.num_experts, bias=False)
        self.experts = nn.ModuleList(FeedForward(cfg.hidden_size, cfg.moe_intermediate_size)
                                     for _ in range(cfg.num_experts))
        self.aux_loss = None

    def forward(self, x):
        shape = x.shape
        flat = x.reshape(-1, shape[-1])
        probs = F.softmax(self.gate(flat).float(), dim=-1)
        top_w, top_i = probs.topk(self.k, dim=-1)
        if self.norm_topk:
            top_w = top_w / (top_w.sum(-1, keepdim=True) + 1e-20)
        # tokens sorted by expert, one host read of the counts per layer (not one per expert): the
        # experts then run on contiguous slices; an expert with no tokens runs on an empty slice, which
        # keeps its parameters in the graph with zero gradients (DDP expects every parameter used)
        expert_of = top_i.reshape(-1)
        order = expert_of.argsort(stable=True)
        counts = torch.bincount(expert_of, minlength=self.n).tolist()
        rows = order // self.k
        xs = flat[rows].split(counts)
        y = torch.cat([expert(xe) for expert, xe in zip(self.experts, xs)])
        y = y * top_w.reshape(-1)[order, None].to(flat.dtype)
        out = torch.zeros_like(flat).index_add(0, rows, y)
        if self.training and self.coef > 0:
            routed = F.one_hot(top_i, self.n).float().sum(1).mean(0)        # fraction per expert (x k)
            self.aux_loss = self.coef * self.n * (routed / self.k * probs.mean(0)).sum()
        else:
            self.aux_loss = None
        return out.view(shape)


class Block(nn.Module):
    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = Attention(cfg)
        self.input_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.post_attention_layernorm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)
        self.mlp = MoEFeedForward(cfg) if cfg.use_moe else FeedForward(cfg.hidden_size, cfg.intermediate_size)

    def forward(self, x, cos, sin, mask, cache, layer):
        x = x + self.self_attn(self.input_layernorm(x), cos, sin, mask, cache, layer)
        return x + self.mlp(self.post_attention_layernorm(x))


class Decoder(nn.Module):
    """Embedding + blocks + final norm (the original's `model.*` submodule)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.embed_tokens = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        self.layers = nn.ModuleList(Block(cfg) for _ in range(cfg.num_hidden_layers))
        self.norm = RMSNorm(cfg.hidden_size, cfg.rms_norm_eps)


def row_segments(seq_ids: torch.Tensor) -> list[list[tuple[int, int]]] | None:
    """(start, length) of each run of equal ids per packed sequence, read on the host (CPU tensors only:
    no device sync), or None when some id occurs in two runs (then only the mask is exact)."""
    out = []
    for ids in seq_ids:
        values, counts = torch.unique_consecutive(ids, return_counts=True)
        if len(set(values.tolist())) != len(values):
            return None
        starts = [0] + counts.cumsum(0)[:-1].tolist()
        out.append(list(zip(starts, counts.tolist())))
    return out


def build_mask(b: int, t: int, offset: int, total: int, device, seq_ids=None, key_mask=None):
    """Boolean attention mask (B, 1, T, total): True where a query may attend to a key.

    Query i sits at absolute index offset+i; keys at 0..total-1. Causal always; with `seq_ids` (B, T,
    packing, no cache) only within the same row; with `key_mask` (B, total) padded keys are hidden.
    """
    q_idx = torch.arange(offset, offset + t, device=device)[:, None]
    k_idx = torch.arange(total, device=device)[None, :]
    mask = (k_idx <= q_idx)[None, None].expand(b, 1, t, total)
    if seq_ids is not None:
        mask = mask & (seq_ids[:, None, :, None] == seq_ids[:, None, None, :])
    if key_mask is not None:
        # a padded query would see no key at all and give NaN (which then leaks through the cache as
        # 0 * NaN); let every query see itself. Padded positions' outputs are never used.
        mask = (mask & key_mask[:, None, None, :].bool()) | (k_idx == q_idx)[None, None]
    return mask


class MiniMindLM(nn.Module):
    """The language model alone: embeddings in, hidden states / logits out."""

    split_packed_rows = True   # CPU: attention per packed row (False: the block-diagonal mask, as on CUDA)

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.cfg = cfg
        self.model = Decoder(cfg)
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        if cfg.tie_word_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        self._rope_len = 0
        self._ensure_rope(min(cfg.max_position_embeddings, 4096))
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        """Fresh init: Linear and Embedding weights ~ N(0, 0.02), norms at 1. (PyTorch's default N(0, 1)
        embedding, tied to lm_head, starts with logits of std ~sqrt(hidden) and a loss near 100.)"""
        for m in self.model.modules():
            if isinstance(m, (nn.Linear, nn.Embedding)):
                nn.init.normal_(m.weight, std=std)
                if getattr(m, "bias", None) is not None:
                    nn.init.zeros_(m.bias)

    def _ensure_rope(self, n: int):
        if n <= self._rope_len:
            return
        n = max(n, 2 * self._rope_len)
        cos, sin = rope_frequencies(self.cfg.head_dim, n, self.cfg.rope_theta, self.cfg.rope_scaling)
        dev = self.model.embed_tokens.weight.device
        self.register_buffer("rope_cos", cos.to(dev), persistent=False)
        self.register_buffer("rope_sin", sin.to(dev), persistent=False)
        self._rope_len = n

    def decode(self, h: torch.Tensor, position_ids=None, seq_ids=None, key_mask=None,
               cache: KVCache | None = None) -> torch.Tensor:
        """Run the blocks over input embeddings h (B, T, H); returns final-norm hidden states."""
        b, t, _ = h.shape
        offset = cache.pos if cache is not None else 0
        if position_ids is None:
            position_ids = torch.arange(offset, offset + t, device=h.device)[None].expand(b, t)
        # every caller's positions are <= the absolute index (they restart per packed row or skip left
        # padding), so offset + t bounds them without reading position_ids back from the device
        self._ensure_rope(offset + t)
        cos = self.rope_cos[position_ids][:, None].to(h.dtype)
        sin = self.rope_sin[position_ids][:, None].to(h.dtype)
        mask = None
        if (seq_ids is not None and key_mask is None and cache is None and self.split_packed_rows
                and seq_ids.device.type == "cpu" and h.device.type == "cpu"):
            mask = row_segments(seq_ids)
        if mask is None and (seq_ids is not None or key_mask is not None or (offset > 0 and t > 1)):
            total = offset + t
            mask = build_mask(b, t, offset, total, h.device, seq_ids, key_mask)
        h = F.dropout(h, self.cfg.dropout, self.training) if self.cfg.dropout else h
        with sdpa_backends(h.device):
            for i, layer in enumerate(self.model.layers):
                h = layer(h, cos, sin, mask, cache, i)
        if cache is not None:
            cache.pos += t
        return self.model.norm(h)

    def aux_loss(self) -> torch.Tensor | None:
        losses = [l.mlp.aux_loss for l in self.model.layers
                  if isinstance(l.mlp, MoEFeedForward) and l.mlp.aux_loss is not None]
        return sum(losses) if losses else None
