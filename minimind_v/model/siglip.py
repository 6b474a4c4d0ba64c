"""The two SigLIP encoder classes and how the package's pixel tensor enters them.

Every picture travels through our data path as one float32 tensor of flattened patches (P, 3*p*p), each
patch (py, px, C) in raster order over the patch grid (hf/pixels.py makes it; the layout
`Siglip2ImageProcessor` returns), so collation, caches and hashing are the same for every kind of
encoder. Here it is handed to the encoder: a SigLIP2 (NaFlex) encoder takes the patches with an attention
mask and the grid (`split_naflex` reads them from the extra last row of a NaFlex tensor); a SigLIP v1
encoder (the 0420 generation) gets the patches folded back into a (3, H, W) picture
(`patches_to_picture`, a pure reshuffle, so exact). The original then merges 4 consecutive rows of the
padded 256 (not 2x2 blocks); our projector does the same reshape.
"""
from __future__ import annotations

import math

import torch


def split_naflex(packed: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(N, P+1, 3pp) -> patches (N, P, 3pp), attention mask (N, P) long, spatial shapes (N, 2) long."""
    patches, info = packed[:, :-1], packed[:, -1, :2].round().long()
    real = info[:, 0] * info[:, 1]
    mask = (torch.arange(patches.shape[1], device=packed.device)[None] < real[:, None]).long()
    return patches, mask, info


def patches_to_picture(patches: torch.Tensor, p: int) -> torch.Tensor:
    """(N, g*g, 3pp) square-grid patches -> (N, 3, g*p, g*p): the picture a Conv2d patch embedding takes."""
    n, count, _ = patches.shape
    g = math.isqrt(count)
    return patches.reshape(n, g, g, p, p, 3).permute(0, 5, 1, 3, 2, 4).reshape(n, 3, g * p, g * p)


# ---------------------------------------------------------------- encoder classes

def encoder_classes(kind: str):
    """'siglip2' | 'siglip' -> (config class, model class) from transformers."""
    if kind == "siglip2":
        from transformers import Siglip2VisionConfig, Siglip2VisionModel
        return Siglip2VisionConfig, Siglip2VisionModel
    if kind == "siglip":
        from transformers import SiglipVisionConfig, SiglipVisionModel
        return SiglipVisionConfig, SiglipVisionModel
    raise ValueError(f"unknown encoder class {kind!r}; choose siglip2 or siglip")


MODEL_TYPES = {"siglip2_vision_model": "siglip2", "siglip_vision_model": "siglip"}


def encoder_kind_of(config: dict, where: str = "encoder config") -> str:
    """The encoder class a config.json describes (`model_type`), refusing anything else by name."""
    kind = MODEL_TYPES.get(config.get("model_type"))
    if kind is None:
        raise ValueError(f"{where}: model_type {config.get('model_type')!r} is not a SigLIP vision encoder "
                         f"(expected one of {sorted(MODEL_TYPES)})")
    return kind


def encoder_patches(config, kind: str) -> int:
    """How many patches the encoder can take: a fixed grid for v1, `num_patches` (at most) for NaFlex."""
    if kind == "siglip":
        return (config.image_size // config.patch_size) ** 2
    return config.num_patches


def run_encoder(encoder, kind: str, vcfg, pixels: torch.Tensor) -> torch.Tensor:
    """Our pixel tensor (N, P[+1], 3pp) -> encoder last_hidden_state (N, P, D), through the public forward."""
    dtype = next(encoder.parameters()).dtype
    if kind == "siglip":
        picture = patches_to_picture(pixels, vcfg.patch_size)
        return encoder(pixel_values=picture.to(dtype)).last_hidden_state
    if vcfg.resize == "naflex":
        patches, mask, shapes = split_naflex(pixels)
    else:
        n, count, _ = pixels.shape
        g = math.isqrt(count)
        patches = pixels
        shapes = torch.tensor([[g, g]], device=pixels.device).expand(n, 2)
        mask = torch.ones(n, count, dtype=torch.long, device=pixels.device)
    return encoder(pixel_values=patches.to(dtype), pixel_attention_mask=mask, spatial_shapes=shapes).last_hidden_state
