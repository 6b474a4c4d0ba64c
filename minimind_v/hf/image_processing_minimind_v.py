"""Image processor of an exported MiniMind-V folder (remote code: `AutoImageProcessor`, `trust_remote_code=True`).

Copied verbatim into every folder written by `minimind-v export --to hf`; imports only numpy, PIL,
torch and transformers. It makes exactly the pixels `minimind-v chat` feeds the model:

  1. any PIL mode -> RGB (transparent areas composited onto white; 16-bit greyscale scaled to 8 bits),
  2. resize to a square of `image_size` (bilinear), so that every patch of the NaFlex encoder is real
     (a non-square picture would otherwise get a partial grid and the 4-merge would mix rows),
  3. x / 255, then (x - image_mean) / image_std,
  4. cut into `patch_size` patches in raster order, each flattened as (p, p, C), the layout
     `Siglip2ImageProcessor` uses: pixel_values of shape (N, (image_size/patch_size)^2, 3*p*p).

The original MiniMind-V's own pixels are options the folder records (`preprocessor_config.json`):
`resample` "bicubic" and `output` "picture" give the 0420 release's (N, 3, H, W) SigLIP v1 input;
`resize` "naflex" keeps the aspect ratio like the March release's Siglip2ImageProcessor (the largest
scale whose grid of p-px patches, each side rounded up to a multiple of p, holds at most
(image_size/p)^2 patches; binary search on the scale to 1e-5), pads to that many rows and adds
`pixel_attention_mask` and `spatial_shapes`.

    proc = AutoImageProcessor.from_pretrained(DIR, trust_remote_code=True)
    pixel_values = proc(images=[img], return_tensors="pt")["pixel_values"]
"""
from __future__ import annotations

import math

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature


def to_rgb(img: Image.Image) -> Image.Image:
    """Any PIL image -> RGB, with transparency composited onto white."""
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
        return Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba).convert("RGB")
    return img.convert("RGB")


FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}


def naflex_size(size, p: int, most: int, eps: float = 1e-5):
    """(W, H) of the aspect-kept resize with at most `most` patches of p px."""
    w0, h0 = size

    def side(scale, n):
        return int(max(p, math.ceil(n * scale / p) * p))

    lo, hi = eps / 10, 100.0
    while hi - lo >= eps:
        mid = (lo + hi) / 2
        if (side(mid, h0) / p) * (side(mid, w0) / p) <= most:
            lo = mid
        else:
            hi = mid
    return side(lo, w0), side(lo, h0)


class MiniMindVImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 256, patch_size: int = 16, image_mean: float = 0.5,
                 image_std: float = 0.5, resize: str = "square", resample: str = "bilinear", output: str = "patches",
                 **kwargs):
        super().__init__(**kwargs)
        if resize not in ("square", "naflex") or resample not in FILTERS or output not in ("patches", "picture"):
            raise ValueError(f"unsupported resize={resize!r} / resample={resample!r} / output={output!r}")
        self.resize, self.resample, self.output = resize, resample, output
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.image_mean, self.image_std = float(image_mean), float(image_std)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    def patches(self, img) -> np.ndarray:
        """One picture -> (num_patches, 3 * p * p) float32."""
        if not isinstance(img, Image.Image):
            img = Image.fromarray(np.asarray(img))
        img = to_rgb(img)
        side, p = self.image_size, self.patch_size
        size = (side, side) if self.resize == "square" else naflex_size(img.size, p, (side // p) ** 2)
        if img.size != size:
            img = img.resize(size, FILTERS[self.resample])
        x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        x = (x - np.float32(self.image_mean)) / np.float32(self.image_std)
        if self.output == "picture":
            return np.ascontiguousarray(x.transpose(2, 0, 1))
        gh, gw = size[1] // p, size[0] // p
        return np.ascontiguousarray(x.reshape(gh, p, gw, p, 3).transpose(0, 2, 1, 3, 4).reshape(gh * gw, p * p * 3))

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        if images is None:
            raise ValueError("no images given")
        if isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        each = [self.patches(im) for im in images]
        if self.resize != "naflex":
            return BatchFeature(data={"pixel_values": np.stack(each)}, tensor_type=return_tensors)
        most, sizes = (self.image_size // self.patch_size) ** 2, []
        pixel_values = np.zeros((len(each), most, each[0].shape[1]), np.float32)
        mask = np.zeros((len(each), most), np.int32)
        for i, (im, x) in enumerate(zip(images, each)):
            pixel_values[i, : len(x)], mask[i, : len(x)] = x, 1
            w, h = naflex_size(Image.fromarray(np.asarray(im)).size if not isinstance(im, Image.Image) else im.size,
                               self.patch_size, most)
            sizes.append((h // self.patch_size, w // self.patch_size))
        return BatchFeature(data={"pixel_values": pixel_values, "pixel_attention_mask": mask,
                                  "spatial_shapes": np.array(sizes, np.int64)}, tensor_type=return_tensors)

    def __call__(self, images=None, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def to_dict(self):
        """Saved without `image_processor_type`: the folder's auto_map names the class, and transformers 4.x
        warns about a "slow image processor" whenever a config names a class that does not end in Fast."""
        d = super().to_dict()
        d.pop("image_processor_type", None)
        return d
