"""The original MiniMind-V's pixels, for both of its generations, and the two SigLIP encoder classes.

Every picture travels through our data path as one float32 tensor of flattened patches (P, 3*p*p), each
patch (py, px, C) in raster order over the patch grid: the layout `Siglip2ImageProcessor` returns. That
keeps collation, caches and hashing the same for every kind of encoder. What differs:

* "square" (`resize`): squash to image_size x image_size, every patch real. The 0420 generation's
  `SiglipImageProcessor` does exactly this with a bicubic filter; a SigLIP v1 encoder then gets the
  patches folded back into a (3, H, W) picture (`patches_to_picture`, a pure reshuffle, so exact).
* "naflex": what the March 2026 generation's `Siglip2ImageProcessor` does. Keep the aspect ratio, pick
  the largest scale whose grid of p-px patches (each side rounded up to a multiple of p) holds at most
  max_patches patches (binary search on the scale, stopping when the interval is under 1e-5), resize
  bilinearly, patchify, and pad with zero rows to max_patches. So 320x200 -> 320x192 -> 12 x 20 = 240
  real patches + 16 padding; 1000x200 -> 560x112 -> 7 x 35 = 245 + 11.
  The grid (h, w) must reach the encoder (it sizes the position grid and the attention mask), so a
  NaFlex tensor carries one extra last row: `row[0], row[1] = h, w` and zeros after. A real normalised
  pixel value is never exactly 0 ((u/255 - 0.5)/0.5 with integer u), so padding rows are all zero.
  The original then merges 4 consecutive rows of the padded 256 (not 2x2 blocks); our projector does
  the same reshape, so the March checkpoints see what they were trained on.

Resizing is PIL on uint8, as both transformers processors do (`Image.resize(size, filter)` with no
reducing gap), then (u/255 - mean)/std in float32: bit-equal to the processors' output.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image

FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


# ---------------------------------------------------------------- pixels

def naflex_size(height: int, width: int, patch: int, max_patches: int, eps: float = 1e-5) -> tuple[int, int]:
    """(H, W) in pixels of the aspect-kept resize with at most `max_patches` patches of `patch` px."""
    def side(scale: float, n: int) -> int:
        return int(max(patch, math.ceil(n * scale / patch) * patch))

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (side(mid, height) / patch) * (side(mid, width) / patch) <= max_patches:
            lo = mid
        else:
            hi = mid
    return side(lo, height), side(lo, width)


def normalise(img: Image.Image, mean: float, std: float) -> torch.Tensor:
    """uint8 RGB picture -> (H, W, 3) float32, (u/255 - mean)/std."""
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).float()
    return (x / 255.0 - mean) / std


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(H, W, C) -> (H/p * W/p, p*p*C), patches in raster order, each (py, px, c)."""
    h, w, c = x.shape
    return x.view(h // p, p, w // p, p, c).permute(0, 2, 1, 3, 4).reshape((h // p) * (w // p), p * p * c)


def square_patches(img: Image.Image, vcfg) -> torch.Tensor:
    """Squash to image_size x image_size -> (num_patches, 3pp)."""
    side = vcfg.image_size
    if img.size != (side, side):
        img = img.resize((side, side), FILTERS[vcfg.resample])
    return patchify(normalise(img, vcfg.image_mean, vcfg.image_std), vcfg.patch_size)


def naflex_patches(img: Image.Image, vcfg) -> torch.Tensor:
    """Aspect-kept NaFlex -> (num_patches + 1, 3pp): real patches, zero padding, then the (h, w) row."""
    p, most = vcfg.patch_size, vcfg.num_patches
    w0, h0 = img.size
    th, tw = naflex_size(h0, w0, p, most)
    if (tw, th) != img.size:
        img = img.resize((tw, th), FILTERS[vcfg.resample])
    real = patchify(normalise(img, vcfg.image_mean, vcfg.image_std), p)
    out = torch.zeros(most + 1, p * p * 3)
    out[: real.shape[0]] = real
    out[most, 0], out[most, 1] = th // p, tw // p
    return out


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
