"""Hugging Face `datasets` parquet exports -> minimind-v parquet.

The columns are mapped by flags or guessed from the usual names (image, conversations, question/answer,
caption/text), and checked against the file's schema before any row is read, so a wrong mapping is one
clear error. Rows are streamed a batch at a time; every cell that cannot be used becomes a record
carrying its error (listed in the report), never a crash mid-file.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pyarrow as pa
import pyarrow.parquet as pq

from ...data.chatml import BadRow
from .common import (CAPTION_PROMPTS, ConvertOptions, ConvertResult, Record, caption_prompt, image_path,
                     llava_messages, run_conversion)


@dataclass
class HFColumns:
    image: str | None
    conversations: str | None = None
    question: str | None = None
    answer: str | None = None
    caption: str | None = None
    keep: tuple = ()

    def needed(self) -> list[str]:
        cols = [self.image, self.conversations, self.question, self.answer, self.caption, *self.keep]
        return list(dict.fromkeys(c for c in cols if c))


def is_image_type(t: pa.DataType) -> bool:
    if pa.types.is_list(t) or pa.types.is_large_list(t):
        t = t.value_type
    if pa.types.is_struct(t):
        return t.get_field_index("bytes") >= 0
    return pa.types.is_binary(t) or pa.types.is_large_binary(t)


def resolve_hf_columns(schema: pa.Schema, image=None, conversations=None, question=None, answer=None,
                       caption=None, keep=()) -> HFColumns:
    """Check the mapping flags against the file, or guess the usual names when none are given."""
    names = schema.names
    if image is None:
        found = [n for n in names if is_image_type(schema.field(n).type)]
        image = "image" if "image" in found else (found[0] if found else None)
    if (question is None) != (answer is None):
        raise ValueError("--question-column and --answer-column go together")
    modes = sum(x is not None for x in (conversations, question, caption))
    if modes > 1:
        raise ValueError("give only one of --conversations-column, --question/--answer-column, --caption-column")
    if modes == 0:
        if "conversations" in names:
            conversations = "conversations"
        elif "question" in names and "answer" in names:
            question, answer = "question", "answer"
        elif "caption" in names or "text" in names:
            caption = "caption" if "caption" in names else "text"
        else:
            raise ValueError(f"cannot tell which column holds the text; columns are {names}: use "
                             f"--conversations-column, --question-column/--answer-column or --caption-column")
    cols = HFColumns(image, conversations, question, answer, caption, tuple(keep))
    missing = [c for c in cols.needed() if c not in names]
    if missing:
        raise ValueError(f"column(s) {missing} not in the file; columns are {names}")
    return cols


def hf_images(value, base_dir: Path, row: int, allow_outside: bool = False) -> tuple[list, list]:
    """An image cell (struct {bytes, path}, raw bytes, a path, or a list of those) -> (sources, names)."""
    if value is None:
        return [], []
    items = value if isinstance(value, list) else [value]
    sources, names = [], []
    for k, v in enumerate(items):
        if isinstance(v, dict):
            data, path = v.get("bytes"), v.get("path")
        elif isinstance(v, (bytes, bytearray)):
            data, path = v, None
        elif isinstance(v, str):
            data, path = None, v
        else:
            raise BadRow("bad_image", f"unsupported image value of type {type(v).__name__}")
        if data:
            sources.append(bytes(data))
        elif path:
            sources.append(image_path(base_dir, path, allow_outside))
        else:
            raise BadRow("missing_image", "image cell has neither bytes nor a path")
        names.append(path or f"row-{row}" + (f"-{k}" if len(items) > 1 else ""))
    return sources, names


def hf_messages(row: dict, cols: HFColumns, seed: int, index: int, prompts) -> object:
    if cols.conversations:
        return llava_messages(row.get(cols.conversations))
    if cols.question:
        q, a = row.get(cols.question), row.get(cols.answer)
        if q is None:
            raise BadRow("no_question", f"column {cols.question!r} is empty")
        if a is None:
            raise BadRow("no_assistant", f"column {cols.answer!r} is empty")
        return [{"role": "user", "content": str(q)}, {"role": "assistant", "content": str(a)}]
    cap = row.get(cols.caption)
    if cap is None:
        raise BadRow("no_assistant", f"column {cols.caption!r} is empty")
    return [{"role": "user", "content": caption_prompt(seed, index, prompts)},
            {"role": "assistant", "content": str(cap)}]


def hf_records(files: list[Path], cols: HFColumns, images_dir: Path | None, seed: int, prompts,
               batch_rows: int, allow_outside: bool = False) -> Iterator[Record]:
    index = 0
    for f in files:
        base = images_dir if images_dir is not None else f.parent
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=cols.needed()):
            for row in batch.to_pylist():
                rec = Record(index, f"{f.name} row {index}")
                try:
                    if cols.image:
                        rec.images, rec.names = hf_images(row.get(cols.image), base, index, allow_outside)
                    rec.messages = hf_messages(row, cols, seed, index, prompts)
                    rec.extra = {c: row.get(c) for c in cols.keep}
                except BadRow as e:
                    rec.error = e
                index += 1
                yield rec


def convert_hf(files, out, image_column=None, conversations_column=None, question_column=None,
               answer_column=None, caption_column=None, keep_columns=(), images_dir=None,
               prompts=CAPTION_PROMPTS, **options) -> ConvertResult:
    """Hugging Face `datasets` parquet export(s) -> parquet. The image column is a struct {bytes, path}
    (raw binary and path strings also work); text comes from a conversations column, a question/answer
    pair (one-turn conversation) or a caption column (prompt chosen by seed, as for caption folders)."""
    opts = ConvertOptions(**options)
    files = [Path(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"parquet file {f} not found")
    schema = pq.read_schema(files[0])
    cols = resolve_hf_columns(schema, image_column, conversations_column, question_column, answer_column,
                              caption_column, keep_columns)
    multi = cols.image is not None and (pa.types.is_list(schema.field(cols.image).type)
                                        or pa.types.is_large_list(schema.field(cols.image).type))
    total = sum(pq.ParquetFile(f).metadata.num_rows for f in files)
    records = hf_records(files, cols, Path(images_dir) if images_dir else None, opts.seed, tuple(prompts),
                         opts.row_group_rows, opts.allow_outside)
    opts.inputs = (*files, images_dir)
    return run_conversion(records, out, opts, multi, total=total, extra_columns=cols.keep, desc="hf")
