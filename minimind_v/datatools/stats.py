"""What is in a parquet data set, before training on it: how many rows are text-only, one-image or
multi-image; how big the pictures are; how long the rows are in tokens.

Token lengths are measured the way the trainer renders a row (data/chatml.py `render_text`): the ChatML
text with every `<image>` replaced by `image_token_len` placeholder tokens (64 by default: 256 SigLIP2
patches merged by 4), tokenised with the given tokenizer. So "rows over max_length" is exactly the
number of rows the trainer would have to cut. Image sizes come from the file headers only (no pixel
decoding), so a large set is scanned quickly; a header that cannot be read is counted as unreadable.

`stats()` prints a table, optionally draws a token-length histogram (matplotlib, imported only then), and
returns a dict.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from ..data.chatml import BadRow, count_markers, parse_conversations, render_text
from ..data.parquet import ParquetRows, row_images
from ..outputs import check_output, staged_output

# (upper bound of the longer side, label); None = no bound
SIZE_BUCKETS = ((64, "<=64"), (128, "65-128"), (256, "129-256"), (512, "257-512"), (1024, "513-1024"),
                (None, ">1024"))


def size_bucket(w: int, h: int) -> str:
    side = max(w, h)
    for bound, label in SIZE_BUCKETS:
        if bound is None or side <= bound:
            return label
    raise AssertionError("unreachable")


def summarize(values) -> dict | None:
    """min / median / p90 / max / mean of a list of numbers (None when empty)."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"min": int(a.min()), "median": float(np.median(a)), "p90": float(np.percentile(a, 90)),
            "max": int(a.max()), "mean": float(a.mean())}


def image_size(data) -> tuple[int, int] | None:
    if not data:
        return None
    from ..image import ImageError
    from ..image import image_size as header_size
    try:
        return header_size(data)
    except ImageError:
        return None


def load_tokenizer(tokenizer):
    """A Tokenizer is used as given; a folder (str or Path) is loaded."""
    if isinstance(tokenizer, (str, Path)):
        from ..tokenizer import Tokenizer
        return Tokenizer.load(tokenizer)
    return tokenizer


def stats(files, tokenizer=None, max_length: int | None = None, png=None, image_token_len: int = 64,
          progress: bool = False, quiet: bool = False, overwrite: bool = False) -> dict:
    """Scan `files` (a parquet path or a list); `tokenizer` is a Tokenizer or a tokenizer folder. `png`
    is checked before the scan (never an input; an existing one needs `overwrite`)."""
    files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    if not 1 <= image_token_len <= 65536:
        raise ValueError(f"--image-token-len {image_token_len}: must be 1-65536")
    if max_length is not None and not 1 <= max_length <= 10_000_000:
        raise ValueError(f"--max-length {max_length}: must be 1-10,000,000")
    inputs = [*files, tokenizer if isinstance(tokenizer, (str, Path)) else None]
    if png is not None:
        check_output(png, inputs, overwrite=overwrite)
    tok = load_tokenizer(tokenizer)
    rows = ParquetRows(files, ["conversations", "image_bytes"])
    kinds, buckets, problems = Counter(), Counter(), Counter()
    widths, heights, lengths = [], [], []
    n_images = unreadable = 0
    for i in tqdm(range(len(rows)), desc="stats", unit="row", disable=not progress):
        row = rows[i]
        try:
            images = row_images(row)
        except BadRow as e:
            problems[e.kind] += 1
            images = []
        kinds["text_only" if not images else "one_image" if len(images) == 1 else "multi_image"] += 1
        for data in images:
            n_images += 1
            size = image_size(data)
            if size is None:
                unreadable += 1
                continue
            widths.append(size[0])
            heights.append(size[1])
            buckets[size_bucket(*size)] += 1
        try:
            msgs = parse_conversations(row.get("conversations"))
        except BadRow as e:
            problems[e.kind] += 1
            continue
        if count_markers(msgs) != len(images):
            problems["marker_mismatch"] += 1
        if tok is not None:
            lengths.append(len(tok.encode(render_text(msgs, image_token_len)[0])))
    n = len(rows)
    result = {
        "files": files,
        "rows": n,
        "counts": {k: kinds[k] for k in ("text_only", "one_image", "multi_image")},
        "shares": {k: (kinds[k] / n if n else 0.0) for k in ("text_only", "one_image", "multi_image")},
        "images": n_images,
        "unreadable_images": unreadable,
        "width": summarize(widths),
        "height": summarize(heights),
        "size_buckets": {label: buckets[label] for _, label in SIZE_BUCKETS},
        "problems": dict(problems),
        "image_token_len": image_token_len,
        "max_length": max_length,
        "tokens": summarize(lengths),
        "over_max_length": (sum(1 for x in lengths if x > max_length) if tok is not None and max_length
                            else None),
    }
    if png is not None and lengths:
        with staged_output(png, inputs, overwrite=overwrite) as stage:
            draw_histogram(lengths, stage, max_length)
        result["png"] = str(png)
    if not quiet:
        print(format_stats(result))
    return result


def fmt_num(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def format_stats(s: dict) -> str:
    """The dict from `stats()` as an aligned two-column table."""
    n = s["rows"]
    lines = [("files", ", ".join(Path(f).name for f in s["files"])), ("rows", str(n))]
    for key, label in (("text_only", "  text-only"), ("one_image", "  one image"), ("multi_image", "  multi-image")):
        lines.append((label, f"{s['counts'][key]} ({100 * s['shares'][key]:.1f}%)"))
    lines.append(("images", f"{s['images']} (unreadable: {s['unreadable_images']})"))
    for key in ("width", "height"):
        d = s[key]
        if d:
            lines.append((f"  {key}", f"min {d['min']}  median {fmt_num(d['median'])}  max {d['max']}"))
    if s["images"]:
        lines.append(("  longer side", "  ".join(f"{k}: {v}" for k, v in s["size_buckets"].items() if v)))
    if s["problems"]:
        lines.append(("problems", ", ".join(f"{k}: {v}" for k, v in s["problems"].items())))
    t = s["tokens"]
    if t:
        lines.append((f"tokens/row ({s['image_token_len']}/image)",
                      f"min {t['min']}  median {fmt_num(t['median'])}  p90 {fmt_num(t['p90'])}  max {t['max']}"))
        if s["over_max_length"] is not None:
            share = s["over_max_length"] / max(1, sum(s["counts"].values()))
            lines.append((f"  over max_length {s['max_length']}", f"{s['over_max_length']} ({100 * share:.1f}%)"))
    else:
        lines.append(("tokens/row", "(give a tokenizer to measure)"))
    width = max(len(k) for k, _ in lines) + 2
    return "\n".join(f"{k:<{width}}{v}" for k, v in lines)


def draw_histogram(lengths, png, max_length: int | None = None, bins: int = 40,
                   size: tuple[int, int] = (800, 420)) -> None:
    """Bar chart of token lengths per row; a red line marks max_length. matplotlib is imported here (only a
    caller that asks for a PNG pays for it) and draws on its own Agg canvas, so no global backend or style
    is touched."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.ticker import MaxNLocator
    lo, hi = min(lengths), max(lengths)
    if max_length:
        hi = max(hi, max_length)
    hi = max(hi, lo + 1)
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.subplots()
    ax.hist(lengths, bins=bins, range=(lo, hi), color="#4670b4", edgecolor="white", linewidth=0.5)
    if max_length:
        over = sum(1 for x in lengths if x > max_length)
        ax.axvline(max_length, color="#dc1e1e", linewidth=2,
                   label=f"max_length {max_length}: {over} row{'s' if over != 1 else ''} over")
        ax.legend(frameon=False)
    ax.set_xlabel("tokens per row")
    ax.set_ylabel("rows")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{len(lengths)} rows, min {min(lengths)} / max {max(lengths)} tokens")
    ax.grid(True, axis="y", alpha=0.3)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)
    Path(png).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(png, format="png")
