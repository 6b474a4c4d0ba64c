"""Projector from encoder patch features to LLM embeddings.

(N, P, D) -> concatenate every `merge` consecutive patches -> (N, P/merge, merge*D)
-> [LayerNorm] -> Linear -> GELU (exact erf) -> Linear -> (N, P/merge, hidden).
With the real recipe: 256 x 768 -> 64 x 3072 -> 64 x 768. Names match the original (`vision_proj.mlp.0`).
"""
from __future__ import annotations

from torch import nn


class Projector(nn.Module):
    def __init__(self, in_dim: int, hidden: int, merge: int = 4, norm: bool = False):
        super().__init__()
        self.merge = merge
        self.norm = nn.LayerNorm(in_dim * merge) if norm else None
        self.mlp = nn.Sequential(nn.Linear(in_dim * merge, hidden), nn.GELU(), nn.Linear(hidden, hidden))

    def forward(self, feats):
        n, p, d = feats.shape
        x = feats.reshape(n, p // self.merge, d * self.merge)
        if self.norm is not None:
            x = self.norm(x)
        return self.mlp(x)
