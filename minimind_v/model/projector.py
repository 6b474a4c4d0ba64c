"""Projector from encoder patch features to LLM embeddings.

(N, P, D) -> concatenate every `merge` consecutive patches -> (N, P/merge, merge*D)
-> [LayerNorm] -> Linear -> GELU (exact erf) -> Linear -> (N, P/merge, hidden).
Names and places match the original's two generations, so their state dicts load as they are:
  March 2026 (merge 4, no norm):  256 x 768 -> 64 x 3072 -> mlp.0 Linear, mlp.1 GELU, mlp.2 Linear -> 64 x 768
  0420 (merge 1, `norm`):         64 x 768 -> mlp.0 LayerNorm, mlp.1 Linear, mlp.2 GELU, mlp.3 Linear -> 64 x 768

Optionally (`ModelConfig.visual_pos_embed`, off in the original recipe) a learned vector per visual token
place is added to the output (`vision_proj.pos_embed`, shape (tokens, hidden)), so every visual token says
where in the picture it sits even when the MLP, trained on what the questions ask, drops the encoder's
own place information. The demo needs it for left/right (docs/demo.md).
"""
from __future__ import annotations

import torch
from torch import nn


class Projector(nn.Module):
    def __init__(self, in_dim: int, hidden: int, merge: int = 4, norm: bool = False, places: int = 0):
        super().__init__()
        self.merge = merge
        width = in_dim * merge
        first = [nn.LayerNorm(width)] if norm else []       # 0420: mlp.0 is the norm, Linears at mlp.1 / mlp.3
        self.mlp = nn.Sequential(*first, nn.Linear(width, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pos_embed = nn.Parameter(torch.randn(places, hidden) * 0.02) if places else None

    def forward(self, feats):
        n, p, d = feats.shape
        x = self.mlp(feats.reshape(n, p // self.merge, d * self.merge))
        return x if self.pos_embed is None else x + self.pos_embed.to(x.dtype)
