"""Image processor of an exported MiniMind-V folder (remote code: `AutoImageProcessor`, `trust_remote_code=True`).

Copied verbatim into every folder written by `minimind-v export --to hf`, together with `pixels.py`, the
package's one picture module, which does all the work (imports: numpy, PIL, transformers and that file).
So it makes exactly the pixels `minimind-v chat` feeds the model, for both upstream generations: the
folder's `preprocessor_config.json` records `resize` ("square" | "naflex"), `resample` ("bilinear" |
"bicubic") and `output` ("patches", or "picture" for the 0420 release's SigLIP v1 input); pixels.py's
docstring gives the steps.

    proc = AutoImageProcessor.from_pretrained(DIR, trust_remote_code=True)
    pixel_values = proc(images=[img], return_tensors="pt")["pixel_values"]
"""
from __future__ import annotations

import numpy as np
from PIL import Image
from transformers.image_processing_utils import BaseImageProcessor, BatchFeature

from .pixels import FILTERS, RESIZES, encoder_inputs


class MiniMindVImageProcessor(BaseImageProcessor):
    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 256, patch_size: int = 16, image_mean: float = 0.5,
                 image_std: float = 0.5, resize: str = "square", resample: str = "bilinear", output: str = "patches",
                 **kwargs):
        super().__init__(**kwargs)
        if resize not in RESIZES or resample not in FILTERS or output not in ("patches", "picture"):
            raise ValueError(f"unsupported resize={resize!r} / resample={resample!r} / output={output!r}")
        self.resize, self.resample, self.output = resize, resample, output
        self.image_size, self.patch_size = int(image_size), int(patch_size)
        self.image_mean, self.image_std = float(image_mean), float(image_std)
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size {self.image_size} is not a multiple of patch_size {self.patch_size}")

    def preprocess(self, images, return_tensors=None, **kwargs) -> BatchFeature:
        if images is None:
            raise ValueError("no images given")
        if isinstance(images, (Image.Image, np.ndarray)) and not (isinstance(images, np.ndarray) and images.ndim == 4):
            images = [images]
        pictures = [im if isinstance(im, Image.Image) else Image.fromarray(np.asarray(im)) for im in images]
        return BatchFeature(data=encoder_inputs(pictures, self, self.output), tensor_type=return_tensors)

    def __call__(self, images=None, return_tensors=None, **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def to_dict(self):
        """Saved without `image_processor_type`: the folder's auto_map names the class, and transformers 4.x
        warns about a "slow image processor" whenever a config names a class that does not end in Fast."""
        d = super().to_dict()
        d.pop("image_processor_type", None)
        return d
