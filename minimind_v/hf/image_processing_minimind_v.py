"""Image processor of an exported MiniMind-V folder (remote code: `AutoImageProcessor`, `trust_remote_code=True`).

Copied verbatim into every folder written by `minimind-v export --to hf`; imports only numpy, PIL,
torch and transformers. It makes exactly the pixels `minimind-v chat` feeds the model:

  1. any PIL mode -> RGB (transparent areas composited onto white; 16-bit greyscale scaled to 8 bits),
  2. resize to a square of `image_size` (bilinear), so that every patch of the NaFlex encoder is real
     (a non-square picture would otherwise get a partial grid and the 4-merge would mix rows),
  3. x / 255, then (x - image_mean) / image_std,
  4. cut into `patch_size` patches in raster order, each flattened as (p, p, C), the layout
     `Siglip2ImageProcessor` uses: pixel_values of shape (N, (image_size/patch_size)^2, 3*p*p).

    proc = AutoImageProcessor.from_pretrained(DIR, trust_remote_code=True)
    pixel_values = proc(images=[img], return_tensors="pt")["pixel_values"]
"""
from __future__ import annotations

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


class MiniMindVImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 256, patch_size: int = 16, image_mean: float = 0.5,
                 image_std: float = 0.5, **kwargs):
        super().__init__(**kwargs)
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
        if img.size != (side, side):
            img = img.resize((side, side), Image.Resampling.BILINEAR)
        x = np.asarray(img, dtype=np.float32) / np.float32(255.0)
        x = (x - np.float32(self.image_mean)) / np.float32(self.image_std)
        g = side // p
        return np.ascontiguousarray(x.reshape(g, p, g, p, 3).transpose(0, 2, 1, 3, 4).reshape(g * g, p * p * 3))

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        if images is None:
            raise ValueError("no images given")
        if isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        pixel_values = np.stack([self.patches(im) for im in images])
        return BatchFeature(data={"pixel_values": pixel_values}, tensor_type=return_tensors)

    def __call__(self, images=None, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def to_dict(self):
        """Saved without `image_processor_type`: the folder's auto_map names the class, and transformers 4.x
        warns about a "slow image processor" whenever a config names a class that does not end in Fast."""
        d = super().to_dict()
        d.pop("image_processor_type", None)
        return d
