"""A folder of images with captions (captions.jsonl or a CSV) -> minimind-v pretrain parquet.

Each caption becomes one row: user "<image>\\n" + a prompt picked by (seed, row) from CAPTION_PROMPTS,
assistant = the caption. Reading never opens an image (common.py decodes them), and a bad line becomes
a record carrying its error, so it is listed in the report rather than stopping the run.
"""
from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Iterator

from ...data.chatml import BadRow
from .common import (CAPTION_PROMPTS, ConvertOptions, ConvertResult, Record, caption_prompt, image_path,
                     run_conversion)


FILE_KEYS = ("file", "image", "file_name", "filename", "path")
CAPTION_KEYS = ("caption", "text")
CSV_HEADER_NAMES = {"file", "filename", "file_name", "image", "image_path", "path", "name"}


def find_captions_file(images_dir: Path) -> Path:
    for name in ("captions.jsonl", "captions.csv"):
        if (images_dir / name).is_file():
            return images_dir / name
    raise FileNotFoundError(f"no captions file given and no captions.jsonl / captions.csv in {images_dir}")


def first_key(obj: dict, keys) -> object:
    for k in keys:
        if k in obj:
            return obj[k]
    return None


def jsonl_caption_entries(path: Path) -> list[tuple]:
    """(where, file, caption, error) per non-empty line of a captions.jsonl."""
    entries = []
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        where = f"{path.name} line {lineno}"
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            entries.append((where, None, None, BadRow("invalid_json", f"line is not valid JSON: {e}")))
            continue
        if not isinstance(obj, dict):
            entries.append((where, None, None, BadRow("invalid_json", "line is not a JSON object")))
            continue
        entries.append((where, first_key(obj, FILE_KEYS), first_key(obj, CAPTION_KEYS), None))
    return entries


def csv_caption_entries(path: Path, images_dir: Path) -> list[tuple]:
    """(where, file, caption, error) per CSV row; a header row (file,caption) is recognised and skipped."""
    entries = []
    with open(path, newline="", encoding="utf-8") as fh:
        rows = [(n, r) for n, r in enumerate(csv.reader(fh), 1) if any(c.strip() for c in r)]
    if rows:
        first = rows[0][1]
        if first[0].strip().lower() in CSV_HEADER_NAMES and not (images_dir / first[0].strip()).is_file():
            rows = rows[1:]
    for lineno, r in rows:
        where = f"{path.name} line {lineno}"
        if len(r) < 2:
            entries.append((where, r[0].strip(), None, None))
        else:     # an unquoted caption with commas spans several cells: join them back
            entries.append((where, r[0].strip(), ",".join(r[1:]).strip(), None))
    return entries


def caption_records(entries: list[tuple], images_dir: Path, seed: int, prompts,
                    allow_outside: bool = False) -> Iterator[Record]:
    for row, (where, file, caption, error) in enumerate(entries):
        rec = Record(row, where, error=error)
        if error is None:
            if not isinstance(file, str) or not file:
                rec.error = BadRow("no_image_name", "no image file name (keys: file / image)")
            elif caption is None:
                rec.error = BadRow("no_assistant", "no caption (keys: caption / text)")
            else:
                rec.messages = [{"role": "user", "content": caption_prompt(seed, row, prompts)},
                                {"role": "assistant", "content": str(caption)}]
                try:
                    rec.images, rec.names = [image_path(images_dir, file, allow_outside)], [file]
                except BadRow as e:
                    rec.error = e
        yield rec


def convert_captions(images_dir, out, captions=None, prompts=CAPTION_PROMPTS, **options) -> ConvertResult:
    """Image folder + captions (`captions.jsonl` with file/caption or image/text keys, or a CSV of
    file name, caption) -> pretrain rows: user "<image>\\n" + a prompt, assistant = the caption."""
    opts = ConvertOptions(**options)
    images_dir = Path(images_dir)
    if not images_dir.is_dir():
        raise FileNotFoundError(f"image folder {images_dir} not found")
    path = Path(captions) if captions is not None else find_captions_file(images_dir)
    if not path.is_file():
        raise FileNotFoundError(f"captions file {path} not found")
    opts.inputs = (images_dir, path)
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        entries = csv_caption_entries(path, images_dir)
    else:
        entries = jsonl_caption_entries(path)
    records = caption_records(entries, images_dir, opts.seed, tuple(prompts), opts.allow_outside)
    return run_conversion(records, out, opts,
                          multi_image=False, total=len(entries), desc="captions")
