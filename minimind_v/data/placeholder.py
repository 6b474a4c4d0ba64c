"""Placeholder pictures on text-only rows (the original's 0420 data format).

The 0420 release stores every row with a picture: a text-only row carries an 8 x 8 black PNG and no
`<image>` marker. Upstream's own code encodes it and then finds no `<|image_pad|>` position to put the
features in, so the picture has no effect on tokens, labels or loss (checked against
`tests/fixtures/reference_0420/data_0420_expected.json`). We match that by dropping such pictures before the
encoder, which saves the encoder pass too. Only a picture that is plainly a placeholder is dropped: at
most 32 px a side and entirely black. A real picture on a row without a marker is still the
`marker_mismatch` it always was (counted and skipped), never silently thrown away.
"""
from __future__ import annotations

from ..image import image_header

PLACEHOLDER_MAX_SIDE = 32


def is_placeholder(data) -> bool:
    """True for a small all-black picture (the original's stand-in on text-only rows)."""
    if not isinstance(data, (bytes, bytearray)) or not data:
        return False
    try:
        with image_header(data) as img:          # the guarded opener: header first, no global Pillow change
            if max(img.size) > PLACEHOLDER_MAX_SIDE:
                return False
            extrema = img.convert("RGB").getextrema()
    except Exception:  # noqa: BLE001 - an undecodable picture is not a placeholder; the caller reports it
        return False
    return all(lo == hi == 0 for lo, hi in extrema)
