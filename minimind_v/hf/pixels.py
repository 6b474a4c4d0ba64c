"""A picture -> what the vision encoder eats, for both upstream generations: the one home of this code.

It imports only numpy, Pillow and the standard library, and nothing of the package, because the same file serves three places:
the PyTorch path (training rows, chat, eval, the server: `packed_pixels`), the remote code inside every
exported Hugging Face folder (copied there as it is, next to image_processing_minimind_v.py), and the
torch-free ONNX runtime (`encoder_inputs`). One file means the three cannot drift apart.

Steps, all on uint8 with PIL then float32 arithmetic (bit-equal to transformers' own processors):

  1. `to_rgb`: any PIL mode -> RGB; transparency composited onto white, 16-bit greyscale scaled to 8 bits.
  2. the size: "square" squashes to image_size x image_size (every patch real; what models trained here
     use, and, with the bicubic filter, the 0420 generation's SiglipImageProcessor); "naflex" keeps the
     aspect ratio like the March generation's Siglip2ImageProcessor: the largest scale whose grid of
     p-px patches (each side rounded up to a multiple of p) holds at most (image_size/p)^2 patches,
     found by bisection on the scale down to an interval of 1e-5. So 320x200 -> 320x192 -> 12 x 20 = 240
     patches; 1000x200 -> 560x112 -> 7 x 35 = 245.
  3. x / 255, then (x - mean) / std.
  4. patches of p x p in raster order over the grid, each flattened as (py, px, channel): the layout
     Siglip2ImageProcessor returns.

Two packings of the result:
  * `packed_pixels` (the package's data path): one (P, 3pp) array per picture; a NaFlex picture is padded
    with zero rows to P and carries one more row whose first two values are the grid (h, w). A real
    normalised value is never exactly 0 ((u/255 - 0.5)/0.5 with integer u), so padding rows are all zero.
  * `encoder_inputs` (the exported processor and the ONNX runtime): the batch as the encoder's own inputs,
    `pixel_values` (N, P, 3pp) plus, for NaFlex, `pixel_attention_mask` (N, P) and `spatial_shapes` (N, 2);
    with output="picture" the (N, 3, H, W) picture a SigLIP v1 Conv2d patch embedding takes.

`open_picture` turns a picture named by a string (a path, an http(s) / file: / data: URL, base64: what a
chat message's {"type": "image", "path" | "url" | "base64"} holds) into a PIL image in its stored mode, so
step 1 converts it exactly as it converts a PIL image handed over directly (bounded: 64 MB, 10 s).

`spec` is anything with the vision settings as attributes or keys: image_size, patch_size, image_mean,
image_std, resize ("square" | "naflex"), resample ("bilinear" | "bicubic").
"""
from __future__ import annotations

import base64
import binascii
import io
import math
import os
import urllib.parse
import urllib.request

import numpy as np
from PIL import Image

MAX_PICTURE_BYTES = 64 * 1024 * 1024            # a picture file or download larger than this is refused
URL_TIMEOUT_S = 10
FILTERS = {"bilinear": Image.Resampling.BILINEAR, "bicubic": Image.Resampling.BICUBIC}
RESIZES = ("square", "naflex")


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


def _get(spec, name: str):
    return spec[name] if isinstance(spec, dict) else getattr(spec, name)


def max_patches(spec) -> int:
    return (int(_get(spec, "image_size")) // int(_get(spec, "patch_size"))) ** 2


def target_size(img: Image.Image, spec) -> tuple[int, int]:
    """(H, W) the picture is resized to."""
    side, p = int(_get(spec, "image_size")), int(_get(spec, "patch_size"))
    resize = _get(spec, "resize")
    if resize == "square":
        return side, side
    if resize == "naflex":
        return naflex_size(img.height, img.width, p, max_patches(spec))
    raise ValueError(f"unknown resize {resize!r}: choose one of {', '.join(RESIZES)}")


def normalised(img: Image.Image, spec) -> np.ndarray:
    """The picture resized and normalised: (H, W, 3) float32."""
    img = to_rgb(img)
    h, w = target_size(img, spec)
    if img.size != (w, h):
        img = img.resize((w, h), FILTERS[_get(spec, "resample")])
    x = np.asarray(img, dtype=np.uint8).astype(np.float32) / np.float32(255.0)
    return (x - np.float32(_get(spec, "image_mean"))) / np.float32(_get(spec, "image_std"))


def patchify(x: np.ndarray, p: int) -> np.ndarray:
    """(H, W, C) -> (H/p * W/p, p*p*C): patches in raster order, each (py, px, c)."""
    h, w, c = x.shape
    return np.ascontiguousarray(
        x.reshape(h // p, p, w // p, p, c).transpose(0, 2, 1, 3, 4).reshape((h // p) * (w // p), p * p * c))


def picture_patches(img: Image.Image, spec) -> tuple[np.ndarray, tuple[int, int]]:
    """One picture -> (its real patches (n, 3pp) float32, the grid (h, w) in patches)."""
    p = int(_get(spec, "patch_size"))
    x = normalised(img, spec)
    return patchify(x, p), (x.shape[0] // p, x.shape[1] // p)


def packed_pixels(img: Image.Image, spec) -> np.ndarray:
    """The package's pixel array for one picture: (P, 3pp) for "square"; for "naflex" (P + 1, 3pp): the real
    patches, zero rows up to P, then a row holding the grid (h, w) in its first two values."""
    patches, (gh, gw) = picture_patches(img, spec)
    if _get(spec, "resize") != "naflex":
        return patches
    most = max_patches(spec)
    out = np.zeros((most + 1, patches.shape[1]), np.float32)
    out[: len(patches)] = patches
    out[most, 0], out[most, 1] = gh, gw
    return out


def pixel_batch(images, spec) -> np.ndarray:
    """`packed_pixels` of several pictures stacked: (N, P[+1], 3pp) float32."""
    return np.stack([packed_pixels(im, spec) for im in images])


def encoder_inputs(images, spec, output: str = "patches") -> dict[str, np.ndarray]:
    """A batch of pictures -> the encoder's inputs as numpy arrays (see the module docstring)."""
    if output == "picture":
        if _get(spec, "resize") != "square":
            raise ValueError("output='picture' needs resize='square' (a fixed grid)")
        return {"pixel_values": np.stack([np.ascontiguousarray(normalised(im, spec).transpose(2, 0, 1))
                                          for im in images])}
    if output != "patches":
        raise ValueError(f"unknown output {output!r}: choose patches or picture")
    each = [picture_patches(im, spec) for im in images]
    if _get(spec, "resize") != "naflex":
        return {"pixel_values": np.stack([x for x, _ in each])}
    most = max_patches(spec)
    values = np.zeros((len(each), most, each[0][0].shape[1]), np.float32)
    mask = np.zeros((len(each), most), np.int32)
    for i, (x, _) in enumerate(each):
        values[i, : len(x)], mask[i, : len(x)] = x, 1
    shapes = np.array([grid for _, grid in each], np.int64)
    return {"pixel_values": values, "pixel_attention_mask": mask, "spatial_shapes": shapes}


# ---------------------------------------------------------------- a picture named by a string

def _read_bounded(fh, what: str) -> bytes:
    data = fh.read(MAX_PICTURE_BYTES + 1)
    if len(data) > MAX_PICTURE_BYTES:
        raise ValueError(f"{what} is over {MAX_PICTURE_BYTES} bytes; not a picture this model takes")
    return data


def picture_bytes(src: str) -> bytes:
    """The bytes of a picture named by a path, an http(s) / file: / data: URL, or plain base64."""
    if src.startswith(("http://", "https://")):
        with urllib.request.urlopen(src, timeout=URL_TIMEOUT_S) as r:    # noqa: S310 - http(s) only
            return _read_bounded(r, src[:80])
    if src.startswith("data:"):
        head, _, payload = src.partition(",")
        try:
            return base64.b64decode(payload, validate=True) if head.endswith(";base64") else \
                urllib.parse.unquote_to_bytes(payload)
        except (binascii.Error, ValueError):
            raise ValueError("a data: URL whose base64 payload does not decode") from None
    path = urllib.parse.unquote(src[len("file://"):]) if src.startswith("file://") else src
    if os.path.isfile(path):
        with open(path, "rb") as fh:
            return _read_bounded(fh, path)
    try:
        return base64.b64decode(src, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError(f"{src[:80]!r} is neither a picture file, an http(s)/file/data URL nor base64") from None


def open_picture(src: str) -> Image.Image:
    """A picture named by a string, decoded as stored (its own mode: RGBA, I;16, P...), so that the image
    processor converts it exactly as it converts a PIL image handed over directly. Pillow's decompression
    bomb limit stays on."""
    data = picture_bytes(src)
    try:
        img = Image.open(io.BytesIO(data))
        img.load()
    except (OSError, SyntaxError, Image.DecompressionBombError) as e:
        raise ValueError(f"{src[:80]!r} is not a picture Pillow can decode: {e}") from None
    return img
