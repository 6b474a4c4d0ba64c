"""The one guarded way to open, check and convert pictures.

Every place in the package that turns bytes or a file into a picture (training rows, `data` tools,
chat, eval, the server, converters, recipes) goes through `open_image` / `open_image_file`, so the
rules live in one spot:

  1. the header is read first (no pixel is decoded), and the declared size is checked against our
     own limit (`too_many_pixels`: a 109 KB PNG may declare 30000 x 30000 pixels and decode to GBs);
  2. only then are the pixels decoded, and a truncated or corrupt file becomes `ImageError`;
  3. any mode (palette, CMYK, 16-bit, alpha) becomes RGB (`to_rgb`, from hf/pixels.py, the one home of
     picture -> encoder input code; transparency over white).

Why no `Image.MAX_IMAGE_PIXELS = None`: that line would switch off Pillow's decompression-bomb guard
for every program that imports us. Pillow's guard is left as the host program set it. Our own limit
(64 Mpx by default) sits below Pillow's (89 Mpx warning, 179 Mpx error), so with our defaults Pillow
never objects; a caller who raises our limit past Pillow's sees Pillow's warning (we do not filter it:
`warnings.catch_warnings` changes process-wide state and is not thread-safe). When Pillow's error fires
(a size over its limit, or over a lower one the host program chose), the picture is refused as
`too_many_pixels`, like our own check.
"""
from __future__ import annotations

import io
import re
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from .hf.pixels import to_rgb

DEFAULT_MAX_PIXELS = 64_000_000
# Training refuses pictures that carry no usable content once resized to a square: a side under 8 px
# (1x1 tracking pixels, spacer GIFs) or one side over 10x the other (banners, which the squeeze destroys).
TRAIN_MIN_SIDE = 8
TRAIN_MAX_ASPECT = 10.0
MAX_FILE_BYTES = 200_000_000        # a picture file larger than this is refused before it is read


class ImageError(ValueError):
    """An image that cannot be used; `kind` names the problem for counting."""

    def __init__(self, kind: str, msg: str):
        super().__init__(msg)
        self.kind = kind



def _open_header(data: bytes, formats) -> Image.Image:
    """`Image.open` on bytes, reading the header only. Pillow's own bomb guard stays as the host program
    set it; when it fires we report the declared size ourselves (our limit is checked by the caller)."""
    try:
        return Image.open(io.BytesIO(data), formats=formats)
    except Image.DecompressionBombError as e:
        size = re.search(r"\((\d+) pixels\)", str(e))
        what = f"image of {size.group(1)} pixels" if size else "image"
        raise ImageError("too_many_pixels", f"{what} refused from its header: over Pillow's decompression-bomb "
                                            f"limit of {2 * (Image.MAX_IMAGE_PIXELS or 0)} pixels") from None


def open_image(data: bytes, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1,
               max_aspect: float | None = None, formats=None) -> Image.Image:
    """Decode image bytes into an RGB PIL image, refusing bombs before decoding pixels.

    The size checks read only the header: `too_many_pixels` (decompression bomb), `tiny_image` (a side
    under `min_side`), `extreme_aspect` (longer side over `max_aspect` x the shorter one). `formats`
    restricts the decoders tried (e.g. ("PNG", "JPEG")). Raises `ImageError` with a `kind`."""
    if data is None or (isinstance(data, (bytes, bytearray, memoryview)) and len(data) == 0):
        raise ImageError("empty_image", "zero-byte image")
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise ImageError("bad_image_type", f"image data must be bytes, not {type(data).__name__}")
    try:
        img = _open_header(bytes(data), formats)
        w, h = img.size
    except ImageError:
        raise
    except UnidentifiedImageError:
        raise ImageError("bad_image", "undecodable image: not a picture in a format Pillow reads (PNG, JPEG, GIF, "
                                      "WebP, BMP, TIFF...)") from None
    except Exception as e:  # noqa: BLE001 - PIL raises many types for bad files
        raise ImageError("bad_image", f"undecodable image: {e}") from None
    if w <= 0 or h <= 0:
        raise ImageError("bad_image", f"image declares an empty size {w}x{h}")
    if w * h > max_pixels:
        raise ImageError("too_many_pixels", f"image of {w}x{h} = {w * h} pixels exceeds the limit of {max_pixels}")
    if min(w, h) < min_side:
        raise ImageError("tiny_image", f"image of {w}x{h} pixels has a side under {min_side}")
    if max_aspect is not None and max(w, h) > max_aspect * min(w, h):
        raise ImageError("extreme_aspect", f"image of {w}x{h} pixels has an aspect ratio over {max_aspect:g}:1")
    try:
        img.load()
        return to_rgb(img)
    except Exception as e:  # noqa: BLE001
        raise ImageError("bad_image", f"truncated or corrupt image: {type(e).__name__}: {e}") from None


def open_image_file(path, max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = 1,
                    max_aspect: float | None = None, formats=None,
                    max_bytes: int = MAX_FILE_BYTES) -> Image.Image:
    """A picture file -> RGB image, with `open_image`'s checks; the message names the file."""
    p = Path(path)
    try:
        size = p.stat().st_size
        if not p.is_file():
            raise ImageError("bad_image", f"{p} is not a file")
        if size > max_bytes:
            raise ImageError("too_large", f"{p} is {size} bytes, over the limit of {max_bytes} for a picture")
        data = p.read_bytes()
    except ImageError:
        raise
    except OSError as e:
        raise ImageError("unreadable_file", f"cannot read {p}: {e.strerror or e}") from None
    try:
        return open_image(data, max_pixels, min_side, max_aspect, formats)
    except ImageError as e:
        raise ImageError(e.kind, f"{p}: {e}") from None


def image_size(data: bytes) -> tuple[int, int]:
    """(width, height) from the header only; raises ImageError."""
    try:
        with _open_header(bytes(data), None) as img:
            return img.size
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageError("bad_image", f"undecodable image: {e}") from None


def image_header(data: bytes) -> Image.Image:
    """The image opened lazily (header read, no pixels decoded), for format/mode/size questions."""
    try:
        return _open_header(bytes(data), None)
    except ImageError:
        raise
    except Exception as e:  # noqa: BLE001
        raise ImageError("bad_image", f"undecodable image: {e}") from None


def blank_image(side: int) -> Image.Image:
    """A plain white square picture (the 'blind' baseline feeds this instead of every image)."""
    return Image.new("RGB", (side, side), (255, 255, 255))