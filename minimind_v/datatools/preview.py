"""A contact sheet of a parquet data set: the first (or N random) rows as a grid of pictures, each with
its first question and answer underneath, so a person can see at a glance whether images and texts
belong together before spending hours training on them.

Each cell is `thumb` x `thumb` pixels of picture (scaled to fit, aspect ratio kept, on a light
background) and a fixed text block below it (wrapped to the cell width, cut with "..." if longer).
Text-only rows show a grey box saying "text only"; an image that cannot be decoded shows a red box with
the reason; a row with several pictures shows its first one with an "1 of K images" badge. Drawn with
Pillow only, using its bundled scalable font where this Pillow version has one.
"""
from __future__ import annotations

import math
import random as _random
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, ImageDraw, ImageFont

from ..data.chatml import IMAGE_MARKER, BadRow, parse_conversations
from ..data.parquet import ParquetRows, row_images
from ..image import ImageError, open_image
from ..outputs import check_output, staged_output

FONT_SIZE = 13
PAD = 8                     # pixels around the picture and the text block
Q_LINES, A_LINES = 3, 4     # wrapped lines shown for the question and the answer
HEADER = 28                 # title bar height
BACKGROUND = (255, 255, 255)
PICTURE_BG = (236, 236, 236)
TEXT_ONLY_BG = (170, 170, 170)
BAD_IMAGE_BG = (230, 150, 150)
Q_COLOUR, A_COLOUR, INFO_COLOUR = (20, 40, 140), (10, 90, 30), (90, 90, 90)
THUMB_RANGE = (16, 1024)    # pixels per cell side: a readable minimum, a sheet a viewer still opens
MAX_ROWS = 1024             # rows on one sheet
MAX_SHEET_PIXELS = 64_000_000   # the whole sheet, checked before it is allocated (3 bytes a pixel: 192 MB)


def load_font(size: int = FONT_SIZE):
    try:
        return ImageFont.load_default(size=size)     # scalable bundled font (Pillow >= 10.1)
    except TypeError:                                # older Pillow: the small bitmap font
        return ImageFont.load_default()


def line_height(font) -> int:
    bottom = font.getbbox("Ag|")[3]
    return max(bottom, FONT_SIZE) + 3


@dataclass
class Layout:
    cols: int
    rows: int
    cell_w: int
    cell_h: int
    text_top: int           # y offset of the text block inside a cell

    @property
    def size(self) -> tuple[int, int]:
        return self.cols * self.cell_w, HEADER + self.rows * self.cell_h


def grid_layout(n: int, thumb: int = 224, cols: int | None = None, font=None) -> Layout:
    """Cells in a near-square grid: cols = ceil(sqrt(n)) unless given."""
    n = max(n, 1)
    cols = min(cols or math.ceil(math.sqrt(n)), n)
    rows = math.ceil(n / cols)
    lh = line_height(font or load_font())
    text_h = (Q_LINES + A_LINES + 1) * lh          # + 1 line for the row number / image info
    return Layout(cols, rows, thumb + 2 * PAD, PAD + thumb + PAD + text_h + PAD, PAD + thumb + PAD)


def wrap(text: str, font, width: int, max_lines: int) -> list[str]:
    """Greedy word wrap by rendered width; over-long words are broken; the last line ends with '...'."""
    lines: list[str] = []
    for para in text.splitlines() or [""]:
        line = ""
        for word in para.split():
            while font.getlength(word) > width:                  # break a word wider than the cell
                cut = len(word)
                while cut > 1 and font.getlength(word[:cut]) > width:
                    cut -= 1
                if line:
                    lines.append(line)
                    line = ""
                lines.append(word[:cut])
                word = word[cut:]
            trial = f"{line} {word}" if line else word
            if font.getlength(trial) <= width:
                line = trial
            else:
                lines.append(line)
                line = word
        if line:
            lines.append(line)
    if len(lines) > max_lines:
        last = lines[max_lines - 1] + " " + lines[max_lines]     # force the cut marker
        lines = lines[:max_lines - 1] + [clip(last, font, width)]
    return lines


def clip(text: str, font, width: int) -> str:
    """One line: the text cut character by character to fit `width`, ending with '...' when cut."""
    if font.getlength(text) <= width:
        return text
    while text and font.getlength(text + "...") > width:
        text = text[:-1]
    return text + "..."


def first_turns(raw) -> tuple[str, str]:
    """The first user question (image markers removed) and the first assistant answer."""
    try:
        msgs = parse_conversations(raw)
    except BadRow as e:
        return f"(unreadable conversation: {e.kind})", ""
    q = next((m["content"] for m in msgs if m["role"] == "user"), "")
    a = next((m["content"] for m in msgs if m["role"] == "assistant"), "(no answer)")
    return " ".join(q.replace(IMAGE_MARKER, " ").split()), a.strip()


def boxed_message(draw, box, colour, text, font) -> None:
    draw.rectangle(box, fill=colour)
    x0, y0, x1, y1 = box
    w = font.getlength(text)
    draw.text(((x0 + x1 - w) / 2, (y0 + y1) / 2 - FONT_SIZE / 2), text, fill=(255, 255, 255), font=font)


def draw_picture(sheet: Image.Image, draw, images: list, x: int, y: int, thumb: int, font) -> None:
    box = (x, y, x + thumb - 1, y + thumb - 1)
    if not images:
        boxed_message(draw, box, TEXT_ONLY_BG, "text only", font)
        return
    try:
        img = open_image(images[0])
    except ImageError as e:
        boxed_message(draw, box, BAD_IMAGE_BG, f"bad image: {e.kind}", font)
        return
    draw.rectangle(box, fill=PICTURE_BG)
    scale = thumb / max(img.size)
    size = (max(1, round(img.width * scale)), max(1, round(img.height * scale)))
    method = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    img = img.resize(size, method)
    sheet.paste(img, (x + (thumb - size[0]) // 2, y + (thumb - size[1]) // 2))
    if len(images) > 1:
        badge = f"1 of {len(images)} images"
        w = font.getlength(badge) + 8
        draw.rectangle((x, y + thumb - FONT_SIZE - 8, x + w, y + thumb - 1), fill=(0, 0, 0))
        draw.text((x + 4, y + thumb - FONT_SIZE - 6), badge, fill=(255, 255, 255), font=font)


def draw_cell(sheet, draw, row: dict, index: int, x: int, y: int, layout: Layout, thumb: int, font) -> None:
    try:
        images = row_images(row)
    except BadRow:
        images = []                   # drawn as "no image"; `data check` names the problem
    draw_picture(sheet, draw, images, x + PAD, y + PAD, thumb, font)
    q, a = first_turns(row.get("conversations"))
    lh, width = line_height(font), thumb
    ty = y + layout.text_top
    info = f"#{index}" + (f"  {row['image_names']}" if row.get("image_names") else "")
    draw.text((x + PAD, ty), clip(info, font, width), fill=INFO_COLOUR, font=font)
    ty += lh
    for text, colour, limit in ((f"Q: {q}", Q_COLOUR, Q_LINES), (f"A: {a}", A_COLOUR, A_LINES)):
        for line in wrap(text, font, width, limit):
            draw.text((x + PAD, ty), line, fill=colour, font=font)
            ty += lh


def pick_rows(total: int, n: int, random: bool, seed: int) -> list[int]:
    n = min(n, total)
    if random:
        return sorted(_random.Random(seed).sample(range(total), n))
    return list(range(n))


def check_sheet(n: int, thumb: int, cols: int | None) -> None:
    """Every number of the sheet bounded before anything is read or allocated (one line naming the bound)."""
    if not THUMB_RANGE[0] <= thumb <= THUMB_RANGE[1]:
        raise ValueError(f"--thumb {thumb}: must be {THUMB_RANGE[0]}-{THUMB_RANGE[1]} pixels")
    if not 1 <= n <= MAX_ROWS:
        raise ValueError(f"--n {n}: must be 1-{MAX_ROWS} rows")
    if cols is not None and not 1 <= cols <= MAX_ROWS:
        raise ValueError(f"--cols {cols}: must be 1-{MAX_ROWS}")
    w, h = grid_layout(n, thumb, cols).size
    if w * h > MAX_SHEET_PIXELS:
        raise ValueError(f"the sheet would be {w}x{h} pixels (over {MAX_SHEET_PIXELS:,}); use a smaller --thumb "
                         f"or --n")


def preview(file, out_png, n: int = 16, random: bool = False, seed: int = 0, thumb: int = 224,
            cols: int | None = None, overwrite: bool = False) -> tuple[int, int]:
    """Draw a grid of the first (or `random`, by `seed`) `n` rows of `file` (a path or a list of
    paths) into `out_png`; returns the picture's (width, height). The sizes are bounded and the output
    checked (never an input; an existing one needs `overwrite`) before any row is read."""
    check_sheet(n, thumb, cols)
    inputs = [file] if isinstance(file, (str, Path)) else list(file)
    check_output(out_png, inputs, overwrite=overwrite)
    rows = ParquetRows(file, ["conversations", "image_bytes", "image_names"])
    if len(rows) == 0:
        raise ValueError(f"{file} has no rows to preview")
    picked = pick_rows(len(rows), n, random, seed)
    font = load_font()
    layout = grid_layout(len(picked), thumb, cols, font)
    sheet = Image.new("RGB", layout.size, BACKGROUND)
    draw = ImageDraw.Draw(sheet)
    label = Path(file).name if isinstance(file, (str, Path)) else ", ".join(Path(f).name for f in file)
    how = f"random, seed {seed}" if random else "first"
    title = f"{label}: {len(picked)} of {len(rows)} rows ({how})"
    draw.text((PAD, (HEADER - FONT_SIZE) // 2), clip(title, font, layout.size[0] - 2 * PAD),
              fill=(0, 0, 0), font=font)
    for k, index in enumerate(picked):
        x = (k % layout.cols) * layout.cell_w
        y = HEADER + (k // layout.cols) * layout.cell_h
        draw_cell(sheet, draw, rows[index], index, x, y, layout, thumb, font)
    with staged_output(out_png, inputs, overwrite=overwrite) as stage:
        sheet.save(stage, format="PNG")
    return sheet.size
