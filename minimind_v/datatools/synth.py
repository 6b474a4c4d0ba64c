"""The built-in synthetic data set: coloured shapes on a white canvas, with captions and questions.

Each scene holds 1-3 objects, each a distinct shape and a distinct colour, placed in different cells of
a 3 x 3 layout with random jitter and size (a lone object sits in the left or right column), so "the
red object" and "the circle" are unambiguous.
Questions come in four types, each with a short reference answer for scoring:

    colour    "What colour is the circle?"                         -> "red"   (reply "The circle is red.")
    shape     "What shape is the red object?"                      -> "circle"
    count     "How many shapes are there?"                         -> "two"
    position  "Is the red circle to the left or to the right of
               the blue square?" (one object: "...on the left or
               the right side of the picture?")                    -> "left" / "right"

Pretrain rows are captions naming every object with its place, in random order ("... The circle is
red and on the left. A blue square is in the middle.");
SFT rows hold several question turns about one picture (cheap: one image, many answers); eval rows
hold one question each, with `answer` and `type` columns. A held-out split uses a different seed.
"""
from __future__ import annotations

import io
import json
import random
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 160, 50), "blue": (30, 70, 220),
           "yellow": (235, 200, 20), "purple": (140, 50, 180), "orange": (245, 130, 20)}
SHAPES = ["circle", "square", "triangle", "diamond"]
NUMBERS = ["zero", "one", "two", "three", "four"]
QTYPES = ["colour", "shape", "count", "position"]


@dataclass
class Obj:
    shape: str
    colour: str
    cx: float    # centre, in [0, 1] of the canvas
    cy: float
    r: float     # half size, in [0, 1]
    col: int     # layout column 0..2 (left, middle, right)


def make_scene(rng: random.Random, max_objects: int = 3) -> list[Obj]:
    n = rng.randint(1, max_objects)
    shapes = rng.sample(SHAPES, n)
    colours = rng.sample(list(COLOURS), n)
    cells = rng.sample([(c, r) for c in range(3) for r in range(3)], n)
    if n == 1:        # a lone object sits clearly left or right, so "which side" is well defined
        cells = [(rng.choice([0, 2]), cells[0][1])]
    objs = []
    for s, c, (col, row) in zip(shapes, colours, cells):
        r = rng.uniform(0.09, 0.12)             # half size; with the jitter it stays inside its cell
        cx = (col + 0.5) / 3 + rng.uniform(-0.03, 0.03)
        cy = (row + 0.5) / 3 + rng.uniform(-0.03, 0.03)
        objs.append(Obj(s, c, cx, cy, r, col))
    return objs


def draw_scene(objs: list[Obj], size: int) -> Image.Image:
    img = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(img)
    for o in objs:
        x, y, r = o.cx * size, o.cy * size, o.r * size
        fill = COLOURS[o.colour]
        if o.shape == "circle":
            d.ellipse([x - r, y - r, x + r, y + r], fill=fill)
        elif o.shape == "square":
            d.rectangle([x - r * 0.9, y - r * 0.9, x + r * 0.9, y + r * 0.9], fill=fill)
        elif o.shape == "triangle":
            d.polygon([(x, y - r), (x - r, y + r * 0.8), (x + r, y + r * 0.8)], fill=fill)
        else:
            d.polygon([(x, y - r), (x + r, y), (x, y + r), (x - r, y)], fill=fill)
    return img


def article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def where(o: Obj) -> str:
    return ["on the left", "in the middle", "on the right"][o.col]


def caption(objs: list[Obj], rng: random.Random) -> str:
    """What is there, then each object in a sentence of its own, in random order.

    The first part lists the shapes and the colours present in a fixed order (no binding needed: it
    teaches seeing shape and colour at all). Then every object, in random order (not left to right: a
    model given ordered captions learns "the first one named is on the left" instead of reading each
    object's place), in one of the two forms the replies use: "A red circle is on the left." (the shape
    follows its colour) or "The circle is red and on the left." (the colour follows its shape). So the
    captions train the very lookups the questions need, token for token."""
    n = len(objs)
    shapes = [s for s in SHAPES if any(o.shape == s for o in objs)]
    colours = [c for c in COLOURS if any(o.colour == c for o in objs)]
    head = (f"There {'is' if n == 1 else 'are'} {NUMBERS[n]} shape{'s' if n > 1 else ''}. "
            f"Shapes: {', '.join(shapes)}. Colours: {', '.join(colours)}. ")
    parts = [f"{article(o.colour).capitalize()} {o.colour} {o.shape} is {where(o)}." if rng.random() < 0.5 else
             f"The {o.shape} is {o.colour} and {where(o)}." for o in rng.sample(objs, len(objs))]
    return head + " ".join(parts)


def question(objs: list[Obj], qtype: str, rng: random.Random) -> tuple[str, str, str]:
    """(question, reply, short answer) of one type about the scene.

    Replies say the answer in a caption's words, right after the word it depends on: "The circle is
    red.", "It is a red circle.". The model copies the question's word and then does the lookup the
    captions trained ("circle is" -> the circle's colour) instead of carrying the word across the
    question to an "It is ..." (docs/LOG.md, 2026-12-02). A position reply first says where each
    object is, as the captions do, then compares: "The red circle is on the left and the blue square
    is in the middle, so it is to the left." (the scorer takes the last side named: eval/score.py).
    Answers are lower-case words after a space, the tokens the captions use ("Red." would be a token of
    its own that the model must learn separately: 46% against 100% for colour in the designs of 2026-11-28)."""
    if qtype == "count":
        n = len(objs)
        return "How many shapes are there?", f"There {'is' if n == 1 else 'are'} {NUMBERS[n]}.", NUMBERS[n]
    if qtype == "colour":
        o = rng.choice(objs)
        return f"What colour is the {o.shape}?", f"The {o.shape} is {o.colour}.", o.colour
    if qtype == "shape":
        o = rng.choice(objs)
        return f"What shape is the {o.colour} object?", f"It is {article(o.colour)} {o.colour} {o.shape}.", o.shape
    # position
    pairs = [(a, b) for a in objs for b in objs if a.col != b.col]
    if not pairs:
        o = rng.choice(objs)
        side = "left" if o.cx < 0.5 else "right"
        return (f"Is the {o.colour} {o.shape} on the left or the right side of the picture?",
                f"The {o.colour} {o.shape} is on the {side}.", side)
    a, b = rng.choice(pairs)
    side = "left" if a.cx < b.cx else "right"
    return (f"Is the {a.colour} {a.shape} to the left or to the right of the {b.colour} {b.shape}?",
            f"The {a.colour} {a.shape} is {where(a)} and the {b.colour} {b.shape} is {where(b)}, "
            f"so it is to the {side}.", side)


# SFT turns lean towards the questions that need binding an attribute to a named object or comparing
# two places (the hard part); counting is learned from few examples
SFT_MIX = {"colour": 0.3, "shape": 0.3, "position": 0.3, "count": 0.1}


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def _write(rows: list[dict], path: Path) -> None:
    table = pa.table({k: [r[k] for r in rows] for k in rows[0]})
    pq.write_table(table, path, row_group_size=512)


def generate(out: str | Path, n: int = 2000, seed: int = 0, image_size: int = 64, kind: str = "all",
             turns: int = 4, max_objects: int = 3, progress: bool = False) -> dict[str, Path]:
    """Write `pretrain.parquet` (captions), `sft.parquet` (multi-turn QA) and/or `eval.parquet`
    (one question per row, with `answer` and `type`) under `out`. Returns the paths written."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(seed)
    kinds = ["pretrain", "sft", "eval"] if kind == "all" else [kind]
    rows = {k: [] for k in kinds}
    it = range(n)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc=f"drawing {n} scenes", unit="img")
    for i in it:
        objs = make_scene(rng, max_objects)
        data = png_bytes(draw_scene(objs, image_size))
        name = f"synth/{seed}_{i}.png"
        if "pretrain" in rows:
            conv = [{"role": "user", "content": "<image>\nDescribe the picture."},
                    {"role": "assistant", "content": caption(objs, rng)}]
            rows["pretrain"].append({"conversations": json.dumps(conv), "image_bytes": data, "image_names": name})
        if "sft" in rows:
            conv = []
            types = rng.choices(list(SFT_MIX), weights=list(SFT_MIX.values()), k=turns)
            for t, qt in enumerate(types):
                q, a, _ = question(objs, qt, rng)
                if t == 0:
                    q = f"<image>\n{q}"
                conv += [{"role": "user", "content": q},
                         {"role": "assistant", "content": a}]
            rows["sft"].append({"conversations": json.dumps(conv), "image_bytes": data, "image_names": name})
        if "eval" in rows:
            qt = QTYPES[i % len(QTYPES)]
            q, a, short = question(objs, qt, rng)
            q = f"<image>\n{q}"
            conv = [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
            rows["eval"].append({"conversations": json.dumps(conv), "image_bytes": data, "image_names": name,
                                 "answer": short, "type": qt})
    paths = {}
    for k, r in rows.items():
        paths[k] = out / f"{k}.parquet"
        _write(r, paths[k])
    return paths


def lone_objects(n: int, seed: int = 0, image_size: int = 64) -> tuple[list[Image.Image], list[str]]:
    """`n` one-object pictures and their short captions ("red circle"): a small labelled set (tests)."""
    rng = random.Random(seed)
    pics, names = [], []
    for _ in range(n):
        objs = make_scene(rng, max_objects=1)
        pics.append(draw_scene(objs, image_size))
        names.append(f"{objs[0].colour} {objs[0].shape}")
    return pics, names


def cell_scenes(n: int, seed: int = 0, image_size: int = 48, max_objects: int = 3, column: bool = False
                ) -> tuple[list[Image.Image], list[list[tuple[str, ...]]]]:
    """`n` scenes of 1-`max_objects` objects and, for each, what sits in each cell of the 3 x 3 layout,
    row by row: (colour, shape), or ("none", "none") for an empty cell. The encoder warm-up's data when
    each layout cell is one patch (48 px pictures, 16 px patches).

    `column=True` adds a third label, the object's column ("left", "middle", "right"; "none" for an
    empty cell), so the warm-up names an object's column the way it names its colour and shape, as a
    property of the object's own patch (docs/LOG.md, 2026-12-03)."""
    rng = random.Random(seed)
    pics, cells = [], []
    empty = ("none",) * (3 if column else 2)
    for _ in range(n):
        objs = make_scene(rng, max_objects)
        grid = [empty] * 9
        for o in objs:
            grid[int(o.cy * 3) * 3 + o.col] = ((o.colour, o.shape, ("left", "middle", "right")[o.col]) if column
                                              else (o.colour, o.shape))
        pics.append(draw_scene(objs, image_size))
        cells.append(grid)
    return pics, cells


def corpus(n: int = 2000, seed: int = 0) -> list[str]:
    """Texts for training the demo tokenizer: every question/answer/caption form the data uses."""
    rng = random.Random(seed)
    texts = []
    for _ in range(n):
        objs = make_scene(rng)
        texts.append(caption(objs, rng))
        for qt in QTYPES:
            q, a, _ = question(objs, qt, rng)
            texts += [q, a]
    texts += ["Describe the picture.", "<image>"]
    return texts
