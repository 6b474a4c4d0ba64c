"""LLaVA-style JSON (or JSON Lines) + an image folder -> minimind-v parquet.

Only the reading lives here: each sample becomes a `Record` (its turns, its image paths, a position such
as "item 3"); a sample that cannot be read becomes a record carrying its error, so one bad line is
listed in the report instead of stopping the run. Validation, decoding and writing are common.py's.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

from ...data.chatml import BadRow
from .common import ConvertOptions, ConvertResult, Record, image_path, llava_messages, run_conversion


def load_llava_items(json_path: Path) -> list:
    """A JSON list, or JSON Lines (one object per line; a bad line becomes an error record)."""
    text = json_path.read_text(encoding="utf-8")
    if json_path.suffix == ".jsonl":
        items = []
        for lineno, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                items.append((f"line {lineno}", json.loads(line)))
            except json.JSONDecodeError as e:
                items.append((f"line {lineno}", BadRow("invalid_json", f"line is not valid JSON: {e}")))
        return items
    try:
        data = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"{json_path} is not valid JSON: {e}") from None
    if not isinstance(data, list):
        raise ValueError(f"{json_path} must hold a JSON list of samples")
    return [(f"item {i}", item) for i, item in enumerate(data)]


def image_list(value) -> list[str]:
    if value is None or value == "":
        return []
    if isinstance(value, str):
        return [value]
    if isinstance(value, list) and all(isinstance(v, str) for v in value):
        return value
    raise BadRow("invalid_json", "'image' must be a path or a list of paths")


def llava_records(items: list, images_dir: Path, keep_columns=(), allow_outside: bool = False) -> Iterator[Record]:
    for row, (where, item) in enumerate(items):
        rec = Record(row, where)
        if isinstance(item, BadRow):
            rec.error = item
        elif not isinstance(item, dict):
            rec.error = BadRow("invalid_json", "sample is not a JSON object")
        else:
            try:
                paths = image_list(item.get("image", item.get("images")))
                rec.messages = llava_messages(item.get("conversations"))
                rec.images = [image_path(images_dir, p, allow_outside) for p in paths]
                rec.names = paths
                rec.extra = {c: item.get(c) for c in keep_columns}
            except BadRow as e:
                rec.error = e
        yield rec


def convert_llava(json_path, images_dir, out, keep_columns=(), **options) -> ConvertResult:
    """LLaVA JSON (list of {"image", "conversations": [{"from", "value"}]}) + image folder -> parquet."""
    opts = ConvertOptions(**options)
    json_path, images_dir = Path(json_path), Path(images_dir)
    if not json_path.is_file():
        raise FileNotFoundError(f"LLaVA JSON file {json_path} not found")
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} not found")
    opts.inputs = (json_path, images_dir)
    items = load_llava_items(json_path)
    multi = any(isinstance(it, dict) and isinstance(it.get("image", it.get("images")), list)
                and len(it.get("image", it.get("images"))) > 1 for _, it in items)
    return run_conversion(llava_records(items, images_dir, keep_columns, opts.allow_outside), out, opts, multi,
                          total=len(items), extra_columns=tuple(keep_columns), desc="llava")
