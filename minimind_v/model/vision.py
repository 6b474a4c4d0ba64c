"""The frozen (or, for the tiny demo, trainable) SigLIP image encoder: our pixel tensor in, patch features out.

Pixels are made elsewhere, in one place for every path (`minimind_v/hf/pixels.py`: square or NaFlex, both
generations); the two encoder classes and how the pixel tensor enters each are in `siglip.py`.

`VisionEncoder.forward` returns `last_hidden_state` (N, patches, width), not the pooled output.
Weights always load as float32 (an fp16 checkpoint would otherwise clash with an fp32 projector), and
freezing is by module, not by parameter name (names changed between transformers 4 and 5).
"""
from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from ..config import VisionConfig
from .llm import sdpa_backends
from .siglip import encoder_classes, encoder_patches, run_encoder
from .transformers_compat import keep_flat_names, load_pretrained


class VisionEncoder(nn.Module):
    """Wraps `transformers.Siglip2VisionModel` (or `SiglipVisionModel`, `vision.encoder_class`); input our
    pixel tensor (N, P[+1], 3pp), output (N, P, width)."""

    def __init__(self, vcfg: VisionConfig, base_dir: str | Path | None = None):
        super().__init__()
        Siglip2VisionConfig, Siglip2VisionModel = encoder_classes(vcfg.encoder_class)
        self.vcfg = vcfg
        if vcfg.path is not None:
            path = Path(vcfg.path)
            if not path.is_absolute() and base_dir is not None:
                path = Path(base_dir) / path
            if not (path / "config.json").exists():
                raise FileNotFoundError(
                    f"vision encoder folder {path} has no config.json; point --vision-encoder at a local "
                    f"SigLIP2 folder (for example siglip2-base-p16-ve)")
            self.encoder = load_pretrained(Siglip2VisionModel, path)
            c = self.encoder.config
            if c.patch_size != vcfg.patch_size or c.hidden_size != vcfg.hidden_size:
                raise ValueError(f"encoder at {path} has patch {c.patch_size} / width {c.hidden_size}, config says "
                                 f"{vcfg.patch_size} / {vcfg.hidden_size}")
        else:
            if vcfg.siglip is None:
                raise ValueError("vision config needs either `path` or a `siglip` config dict")
            self.encoder = Siglip2VisionModel(Siglip2VisionConfig(**vcfg.siglip))
        keep_flat_names(self)          # weight names in our files do not depend on the transformers version
        most = encoder_patches(self.encoder.config, vcfg.encoder_class)
        if vcfg.num_patches > most or (vcfg.encoder_class == "siglip" and vcfg.num_patches != most):
            raise ValueError(f"{vcfg.num_patches} patches per image do not fit the encoder's {most}")

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        with sdpa_backends(patches.device):
            return run_encoder(self.encoder, self.vcfg.encoder_class, self.vcfg, patches)
