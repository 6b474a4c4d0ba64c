"""Picture augmentation for training on few real pictures: zoom, shift, brightness and contrast.

A small data set seen for many epochs is memorised picture by picture (the emoji recipe's training loss
keeps falling while its validation loss stops). Showing each picture a little differently every epoch
makes the encoder learn what stays the same. `augment_image(img, strength)` draws, with Python's
`random` (which the training loop seeds per (seed, epoch, row), so a resumed run sees the same pictures):

    zoom        a factor in 1 +- 0.15 * strength: below 1 the picture shrinks onto a canvas of its own
                corner colour, above 1 its centre part is cut out and enlarged
    shift       up to 8% * strength of the side, both axes (the uncovered edge takes the corner colour)
    brightness  and contrast, each a factor in 1 +- 0.1 * strength

No flips or colour changes: they change what a picture shows ("left arrow", "red", skin tones).
strength 0 returns the picture untouched.

`restyle(img, strength)` changes how a picture is drawn but not what it shows, for a model that must
recognise an emoji in an art style it never saw (Google's Noto has soft gradients and thin outlines,
Twemoji flat fills and no outlines). With probability `strength` it applies one of: fewer colour levels
(posterize: gradients become flat areas), a soft blur (fine lines and details fade), thicker or thinner
dark strokes (a 3 x 3 min or max filter), or a lower resolution (down, then up again). Hues stay: a red
heart and a skin tone must stay what they are.
"""
from __future__ import annotations

import random

from PIL import Image, ImageEnhance, ImageFilter, ImageOps

from ..image import to_rgb


def augment_image(img: Image.Image, strength: float = 1.0) -> Image.Image:
    if strength <= 0:
        return img
    img = to_rgb(img)          # as everywhere else: transparent areas become white, not black
    w, h = img.size
    corner = img.getpixel((0, 0))
    zoom = 1 + random.uniform(-0.15, 0.15) * strength
    dx = round(random.uniform(-0.08, 0.08) * strength * w)
    dy = round(random.uniform(-0.08, 0.08) * strength * h)
    sw, sh = max(1, round(w * zoom)), max(1, round(h * zoom))
    scaled = img.resize((sw, sh), Image.Resampling.BILINEAR)
    canvas = Image.new("RGB", (w, h), corner)
    canvas.paste(scaled, ((w - sw) // 2 + dx, (h - sh) // 2 + dy))
    canvas = ImageEnhance.Brightness(canvas).enhance(1 + random.uniform(-0.1, 0.1) * strength)
    return ImageEnhance.Contrast(canvas).enhance(1 + random.uniform(-0.1, 0.1) * strength)


def restyle(img: Image.Image, strength: float = 1.0) -> Image.Image:
    if strength <= 0 or random.random() >= strength:
        return img
    img = to_rgb(img)
    w, h = img.size
    kind = random.randrange(5)
    if kind == 0:
        return ImageOps.posterize(img, random.choice([2, 3, 4]))
    if kind == 1:
        return img.filter(ImageFilter.GaussianBlur(random.uniform(0.6, 1.2)))
    if kind == 2:
        return img.filter(ImageFilter.MinFilter(3))        # dark strokes and edges grow
    if kind == 3:
        return img.filter(ImageFilter.MaxFilter(3))        # dark strokes thin, light areas grow
    f = random.choice([2, 3])
    small = img.resize((max(1, w // f), max(1, h // f)), Image.Resampling.BILINEAR)
    return small.resize((w, h), Image.Resampling.NEAREST)
