"""Projector from encoder patch features to LLM embeddings.

(N, P, D) -> concatenate every `merge` consecutive patches -> (N, P/merge, merge*D)
-> [LayerNorm] -> Linear -> GELU (exact erf) -> Linear -> (N, P/merge, hidden).
With the real recipe: 256 x 768 -> 64 x 3072 -> 64 x 768. Names match the original (`vision_proj.mlp.0`).

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
        self.norm = nn.LayerNorm(in_dim * merge) if norm else None
        self.mlp = nn.Sequential(nn.Linear(in_dim * merge, hidden), nn.GELU(), nn.Linear(hidden, hidden))
        self.pos_embed = nn.Parameter(torch.randn(places, hidden) * 0.02) if places else None

    def forward(self, feats):
        n, p, d = feats.shape
        x = feats.reshape(n, p // self.merge, d * self.merge)
        if self.norm is not None:
            x = self.norm(x)
        x = self.mlp(x)
        return x if self.pos_embed is None else x + self.pos_embed.to(x.dtype)
