"""The frozen (or, for the tiny demo, trainable) SigLIP2 image encoder and its pixel preprocessing.

Opening pictures and converting any mode to RGB live in `minimind_v/image.py` (re-exported here for old
imports). `image_to_patches` resizes it to a square of `image_size` so that
all patches form a full grid (NaFlex would otherwise pad a non-square picture and the 4-merge would mix
rows with padding), normalises with SigLIP's mean/std and flattens patches exactly as
`Siglip2ImageProcessor` does: patch-major in raster order, each patch (p, p, C) flattened.

The original's own pixels (bicubic squash for the 0420 p32 encoder, aspect-kept NaFlex for the March p16
one) and the SigLIP v1 class live in `naflex.py`; the folder's vision config says which one applies.

`VisionEncoder.forward` returns `last_hidden_state` (N, patches, width), not the pooled output.
Weights always load as float32 (an fp16 checkpoint would otherwise clash with an fp32 projector), and
freezing is by module, not by parameter name (names changed between transformers 4 and 5).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..config import VisionConfig
from ..image import (DEFAULT_MAX_PIXELS, TRAIN_MAX_ASPECT, TRAIN_MIN_SIDE, ImageError,  # noqa: F401 - re-exported
                     open_image, to_rgb)
from .llm import sdpa_backends
from .naflex import encoder_classes, encoder_patches, naflex_patches, run_encoder, square_patches
from .transformers_compat import keep_flat_names, load_pretrained


def image_to_patches(img: Image.Image, vcfg: VisionConfig) -> torch.Tensor:
    """PIL image -> (num_patches, 3 * p * p) float32, SigLIP-normalised, full square grid."""
    img = to_rgb(img)
    side, p = vcfg.image_size, vcfg.patch_size
    if vcfg.resize != "square" or vcfg.resample != "bilinear":   # the original's processors (model/naflex.py)
        return naflex_patches(img, vcfg) if vcfg.resize == "naflex" else square_patches(img, vcfg)
    if img.size != (side, side):
        img = img.resize((side, side), Image.Resampling.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.float32).copy())          # (H, W, C)
    x = (x / 255.0 - vcfg.image_mean) / vcfg.image_std
    g = side // p
    x = x.view(g, p, g, p, 3).permute(0, 2, 1, 3, 4).reshape(g * g, p * p * 3)
    return x


def blank_image(vcfg: VisionConfig) -> Image.Image:
    """A plain white picture (the 'blind' baseline feeds this instead of every image)."""
    return Image.new("RGB", (vcfg.image_size, vcfg.image_size), (255, 255, 255))


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

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        return image_to_patches(img, self.vcfg)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        with sdpa_backends(patches.device):
            return run_encoder(self.encoder, self.vcfg.encoder_class, self.vcfg, patches)
