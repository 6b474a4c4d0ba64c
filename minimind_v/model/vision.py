"""The frozen (or, for the tiny demo, trainable) SigLIP2 image encoder and its pixel preprocessing.

`load_image` turns any PIL image (RGB, RGBA, LA, P with transparency, CMYK, I;16, 1-bit, ...) into RGB,
compositing transparency onto white. `image_to_patches` resizes it to a square of `image_size` so that
all patches form a full grid (NaFlex would otherwise pad a non-square picture and the 4-merge would mix
rows with padding), normalises with SigLIP's mean/std and flattens patches exactly as
`Siglip2ImageProcessor` does: patch-major in raster order, each patch (p, p, C) flattened.

`VisionEncoder.forward` returns `last_hidden_state` (N, patches, width), not the pooled output.
Weights always load as float32 (an fp16 checkpoint would otherwise clash with an fp32 projector), and
freezing is by module, not by parameter name (names changed between transformers 4 and 5).
"""
from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch import nn

from ..config import VisionConfig
from .llm import sdpa_backends
from .transformers_compat import keep_flat_names, load_pretrained

Image.MAX_IMAGE_PIXELS = None     # we enforce our own limit before decoding (see `open_image`)
DEFAULT_MAX_PIXELS = 64_000_000
# Training refuses pictures that carry no usable content once resized to a square: a side under 8 px
# (1x1 tracking pixels, spacer GIFs) or one side over 10x the other (banners, which the squeeze destroys).
TRAIN_MIN_SIDE = 8
TRAIN_MAX_ASPECT = 10.0


class ImageError(ValueError):
    """An image that cannot be used; `kind` names the problem for counting."""

    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1,
               max_aspect: float | None = None) -> Image.Image:
    """Decode image bytes into an RGB PIL image, refusing bombs before decoding pixels.

    The size checks read only the header: `too_many_pixels` (decompression bomb), `tiny_image` (a side
    under `min_side`), `extreme_aspect` (longer side over `max_aspect` x the shorter one)."""
    if data is None or len(data) == 0:
        raise ImageError("empty_image", "zero-byte image")
    try:
        img = Image.open(io.BytesIO(data))
        w, h = img.size
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
        raise ImageError("bad_image", f"undecodable image: {e}") from None
    if w * h > max_pixels:
        raise ImageError("too_many_pixels", f"image of {w}x{h} pixels exceeds the limit of {max_pixels}")
    if min(w, h) < min_side:
        raise ImageError("tiny_image", f"image of {w}x{h} pixels has a side under {min_side}")
    if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
        raise ImageError("extreme_aspect", f"image of {w}x{h} pixels has an aspect ratio over {max_aspect:g}:1")
    try:
        img.load()
    except Exception as e:  # noqa: BLE001
        raise ImageError("bad_image", f"truncated or corrupt image: {e}") from None
    return to_rgb(img)


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL mode -> RGB; transparent areas become white."""
    if img.mode == "RGB":
        return img
    if img.mode == "P":
        img = img.convert("RGBA") if "transparency" in img.info else img.convert("RGB")
    if img.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(img, dtype=np.float64)
        top = 65535.0 if img.mode.startswith("I;16") or arr.max() > 255 else 255.0
        img = Image.fromarray(np.clip(arr / top * 255.0, 0, 255).astype(np.uint8), "L")
    if img.mode == "F":
        img = Image.fromarray(np.clip(np.asarray(img), 0, 255).astype(np.uint8), "L")
    if img.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = img.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    return img.convert("RGB")


def image_to_patches(img: Image.Image, vcfg: VisionConfig) -> torch.Tensor:
    """PIL image -> (num_patches, 3 * p * p) float32, SigLIP-normalised, full square grid."""
    img = to_rgb(img)
    side, p = vcfg.image_size, vcfg.patch_size
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
    """Wraps `transformers.Siglip2VisionModel`; input patches (N, P, 3pp), output (N, P, width)."""

    def __init__(self, vcfg: VisionConfig, base_dir: str | Path | None = None):
        super().__init__()
        from transformers import Siglip2VisionConfig, Siglip2VisionModel
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
        if vcfg.num_patches > self.encoder.config.num_patches:
            raise ValueError(f"{vcfg.num_patches} patches per image exceed the encoder's {self.encoder.config.num_patches}")

    def preprocess(self, img: Image.Image) -> torch.Tensor:
        return image_to_patches(img, self.vcfg)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        n, p, _ = patches.shape
        g = int(round(p ** 0.5))
        shapes = torch.tensor([[g, g]], device=patches.device).expand(n, 2)
        mask = torch.ones(n, p, dtype=torch.long, device=patches.device)
        dtype = next(self.encoder.parameters()).dtype     # no attribute path: 4.x nests the layers
        with sdpa_backends(patches.device):
            out = self.encoder(pixel_values=patches.to(dtype), pixel_attention_mask=mask, spatial_shapes=shapes)
        return out.last_hidden_state
