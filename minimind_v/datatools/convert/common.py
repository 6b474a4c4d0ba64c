"""Bring-your-own-data converters: LLaVA JSON, image folders with captions, and Hugging Face parquet
exports, all turned into the minimind-v parquet format that the trainer reads.

Output columns (see data/parquet.py): `conversations` (JSON string of {"role", "content"} messages, the
user turn holding one `<image>` per picture), `image_bytes` (binary; list<binary> when any row of the
input has several images; null for text-only rows), `image_names` (comma-joined), plus any extra
columns the caller asked to keep (as strings).

How a conversion runs, and why:

1. A reader turns the input into `Record`s: the conversation, where each image comes from (bytes or a
   path) and a human-readable position ("item 3", "captions.jsonl line 7"). Reading does not touch
   image files, so a broken input row becomes a record carrying its error, not a crash.
2. `convert_record` validates each record the way the trainer will (roles alternate, an assistant
   reply exists, one `<image>` marker per image), decodes every image (so a corrupt file is caught here,
   not mid-training), optionally shrinks and re-encodes it, and hashes its pixels.
3. Rows whose image(s) have the same pixel hash as an earlier row are counted; with `dedupe` they are
   dropped (off by default: VQA data often asks several questions about one picture, on purpose).
4. Good rows go to `ShardWriter`, which writes row groups of 256 rows (readers load one group at a time)
   into one file or into shards of `shard_rows` rows, via temporary files renamed when complete.
5. With a validation fraction, rows are first written to a staging file, so that the split is exact on
   what survived: round(n * fraction) of the n distinct pictures (text-only rows count one each) are
   chosen by seed, and all rows showing a chosen picture go to validation. Rows sharing a picture thus
   never straddle train and val (no leak), and every row keeps its input order.

Nothing is dropped silently: every rejected row is listed with its position and reason in
`ConvertResult.bad` (and every duplicate in `.duplicates`); `report()` prints them at the end.
"""
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable, Iterator

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from ..image import ImageError, image_header, open_image
from .chat import IMAGE_MARKER, BadRow, check_order, count_markers, parse_conversations

CAPTION_PROMPTS = (
    "Describe this image.",
    "What is in the picture?",
    "Give a short caption for this image.",
    "What does this image show?",
    "Describe the picture briefly.",
    "What can you see in this image?",
)
IMAGE_FORMATS = ("keep", "jpeg", "png")
ROW_GROUP_ROWS = 256
REPORT_LINES = 50          # problems listed one by one in the printed report; the rest are counted


# ----------------------------------------------------------------------------------------------
# options, records, results

@dataclass
class ConvertOptions:
    """Settings shared by every converter (the CLI flags of `minimind-v data convert`)."""
    max_side: int | None = None      # shrink images whose longer side exceeds this (keeps aspect ratio)
    image_format: str = "keep"       # keep | jpeg | png
    quality: int = 90                # JPEG quality when re-encoding to JPEG
    shard_rows: int | None = None    # rows per output file; None = one file per split
    val_fraction: float = 0.0        # share of the written pictures (with their rows) for validation
    seed: int = 0                    # for the split and the caption prompts
    dedupe: bool = False             # drop rows whose image(s) repeat an earlier row's
    row_group_rows: int = ROW_GROUP_ROWS
    progress: bool = True            # tqdm progress bars
    quiet: bool = False              # do not print the report
    report_json: str | None = None   # also write the report as JSON here

    def __post_init__(self):
        if self.image_format not in IMAGE_FORMATS:
            raise ValueError(f"image format must be one of {IMAGE_FORMATS}, got {self.image_format!r}")
        if self.max_side is not None and self.max_side < 1:
            raise ValueError("max_side must be a positive number of pixels")
        if not 1 <= self.quality <= 100:
            raise ValueError("JPEG quality must be between 1 and 100")
        if self.shard_rows is not None and self.shard_rows < 1:
            raise ValueError("shard_rows must be at least 1")
        if not 0.0 <= self.val_fraction < 1.0:
            raise ValueError("val_fraction must be in [0, 1)")
        if self.row_group_rows < 1:
            raise ValueError("row_group_rows must be at least 1")


@dataclass
class Record:
    """One input row before its images are loaded."""
    row: int                                      # 0-based position among the input's rows
    where: str                                    # for people: "item 3", "captions.csv line 5"
    messages: object = None                       # list of {"role", "content"} or a JSON string
    images: list = field(default_factory=list)    # per image: bytes, or a Path to read
    names: list = field(default_factory=list)     # per image: a name for `image_names`
    extra: dict = field(default_factory=dict)     # values for the kept extra columns
    error: BadRow | None = None                   # a problem found while reading the input


@dataclass
class Problem:
    row: int
    where: str
    kind: str
    msg: str


@dataclass
class ConvertResult:
    files: dict = field(default_factory=dict)       # split ("all", or "train"/"val") -> file paths
    written: dict = field(default_factory=dict)     # split -> rows written
    rows_read: int = 0
    bad: list = field(default_factory=list)         # Problem per rejected row
    duplicates: list = field(default_factory=list)  # Problem per row dropped as a duplicate image
    shared_images: int = 0                          # rows kept although their image(s) repeat (no dedupe)

    @property
    def rows_written(self) -> int:
        return sum(self.written.values())

    @property
    def bad_counts(self) -> Counter:
        return Counter(p.kind for p in self.bad)

    def as_dict(self) -> dict:
        return {
            "files": self.files, "written": self.written, "rows_read": self.rows_read,
            "rows_written": self.rows_written, "duplicates": len(self.duplicates),
            "shared_images": self.shared_images,
            "bad_counts": dict(self.bad_counts),
            "bad": [vars(p) for p in self.bad], "duplicate_rows": [vars(p) for p in self.duplicates],
        }

    def report(self, limit: int = REPORT_LINES, dup_limit: int = 10) -> str:
        lines = [f"read {self.rows_read} rows, wrote {self.rows_written}"
                 f" ({', '.join(f'{k}: {v}' for k, v in self.written.items())})"]
        for split, files in self.files.items():
            shown = files if len(files) <= 3 else files[:2] + [f"... ({len(files)} files)", files[-1]]
            lines.append(f"  {split}: {', '.join(str(f) for f in shown)}")
        if self.duplicates:
            lines.append(f"dropped {len(self.duplicates)} row(s) whose image repeats an earlier row:")
            lines += [f"  {p.where}: {p.msg}" for p in self.duplicates[:dup_limit]]
            if len(self.duplicates) > dup_limit:
                lines.append(f"  ... and {len(self.duplicates) - dup_limit} more")
        if self.shared_images:
            lines.append(f"kept {self.shared_images} row(s) whose image repeats an earlier row's "
                         f"(--dedupe drops them)")
        if self.bad:
            counts = ", ".join(f"{k}: {v}" for k, v in self.bad_counts.most_common())
            lines.append(f"rejected {len(self.bad)} row(s) ({counts}):")
            lines += [f"  {p.where}: {p.kind}: {p.msg}" for p in self.bad[:limit]]
            if len(self.bad) > limit:
                lines.append(f"  ... and {len(self.bad) - limit} more")
        else:
            lines.append("no rows rejected")
        return "\n".join(lines)


# ----------------------------------------------------------------------------------------------
# writing

def output_schema(multi_image: bool, extra_columns=()) -> pa.Schema:
    image_type = pa.list_(pa.binary()) if multi_image else pa.binary()
    fields = [("conversations", pa.string()), ("image_bytes", image_type), ("image_names", pa.string())]
    fields += [(c, pa.string()) for c in extra_columns]
    return pa.schema(fields)


class ShardWriter:
    """Rows -> `stem.parquet`, or `stem-00000.parquet`, `stem-00001.parquet`, ... of `shard_rows` rows.

    Each row group holds at most `row_group_rows` rows. A file is written as `<name>.tmp` and renamed
    when it is complete, so a crashed run never leaves a truncated file under the final name.
    """

    def __init__(self, stem: Path, schema: pa.Schema, shard_rows: int | None = None,
                 row_group_rows: int = ROW_GROUP_ROWS):
        self.stem, self.schema = Path(stem), schema
        self.shard_rows, self.row_group_rows = shard_rows, row_group_rows
        self.buffer: list[dict] = []
        self.writer, self.path, self.shard, self.in_shard = None, None, 0, 0
        self.files: list[str] = []
        self.rows = 0

    def _name(self) -> Path:
        if self.shard_rows is None:
            return self.stem.with_name(self.stem.name + ".parquet")
        return self.stem.with_name(f"{self.stem.name}-{self.shard:05d}.parquet")

    def _open(self) -> None:
        self.path = self._name()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.writer = pq.ParquetWriter(str(self.path) + ".tmp", self.schema)

    def _close_shard(self) -> None:
        self.writer.close()
        os.replace(str(self.path) + ".tmp", self.path)
        self.files.append(str(self.path))
        self.writer, self.in_shard = None, 0
        self.shard += 1

    def add(self, row: dict) -> None:
        self.buffer.append(row)
        shard_full = self.shard_rows is not None and self.in_shard + len(self.buffer) >= self.shard_rows
        if len(self.buffer) >= self.row_group_rows or shard_full:
            self._flush()

    def _flush(self) -> None:
        if not self.buffer:
            return
        if self.writer is None:
            self._open()
        self.writer.write_table(pa.Table.from_pylist(self.buffer, schema=self.schema))   # one row group
        self.in_shard += len(self.buffer)
        self.rows += len(self.buffer)
        self.buffer = []
        if self.shard_rows is not None and self.in_shard >= self.shard_rows:
            self._close_shard()

    def close(self) -> list[str]:
        """Write what is buffered; an output with no rows still gets one (empty) file."""
        self._flush()
        if self.writer is None and not self.files:
            self._open()
        if self.writer is not None:
            self._close_shard()
        return self.files

    def abort(self) -> None:
        if self.writer is not None:
            self.writer.close()
            Path(str(self.path) + ".tmp").unlink(missing_ok=True)
            self.writer = None


def output_stem(out) -> Path:
    """`data/mine.parquet` -> `data/mine` (the stem every output file name is built from)."""
    out = Path(out)
    if out.suffix != ".parquet":
        raise ValueError(f"--out must be a file name ending in .parquet, got {str(out)!r}")
    return out.with_suffix("")


# ----------------------------------------------------------------------------------------------
# per-row conversion

def ensure_markers(msgs: list[dict], n_images: int) -> list[dict]:
    """A row with images but no `<image>` marker gets one marker per image before its first user turn."""
    if n_images == 0 or count_markers(msgs) > 0:
        return msgs
    out = [dict(m) for m in msgs]
    for m in out:
        if m["role"] == "user":
            m["content"] = (IMAGE_MARKER + "\n") * n_images + m["content"]
            break
    return out


def read_source(src) -> bytes:
    if isinstance(src, (bytes, bytearray)):
        return bytes(src)
    path = Path(src)
    if not path.is_file():
        raise BadRow("missing_image", f"image file {path} not found")
    return path.read_bytes()


def prepare_image(data: bytes, opts: ConvertOptions) -> tuple[bytes, bytes]:
    """Validate (decode fully), optionally shrink / re-encode; return (stored bytes, pixel hash)."""
    img = open_image(data)                                     # RGB; raises ImageError if unusable
    key = hashlib.sha1(f"{img.size}".encode() + img.tobytes()).digest()
    shrink = opts.max_side is not None and max(img.size) > opts.max_side
    if not shrink and opts.image_format == "keep":
        return data, key                                       # the original file, byte for byte
    if shrink:
        img = img.copy()
        img.thumbnail((opts.max_side, opts.max_side), Image.Resampling.LANCZOS)
    fmt = opts.image_format
    if fmt == "keep":
        source = image_header(data).format
        fmt = "jpeg" if source == "JPEG" else "png"           # anything else is stored losslessly
    buf = io.BytesIO()
    if fmt == "jpeg":
        img.save(buf, format="JPEG", quality=opts.quality)
    else:
        img.save(buf, format="PNG", optimize=False)
    return buf.getvalue(), key


def convert_record(rec: Record, opts: ConvertOptions, multi_image: bool,
                   extra_columns=()) -> tuple[dict, bytes | None]:
    """Record -> (output row, image hash key or None for text-only rows); raises BadRow / ImageError."""
    if rec.error is not None:
        raise rec.error
    msgs = ensure_markers(parse_conversations(rec.messages), len(rec.images))
    check_order(msgs)
    n_markers = count_markers(msgs)
    if n_markers != len(rec.images):
        raise BadRow("marker_mismatch", f"{n_markers} <image> marker(s) but {len(rec.images)} image(s)")
    if len(rec.images) > 1 and not multi_image:
        raise BadRow("marker_mismatch", "several images in a single-image output")
    blobs, keys = [], []
    for src in rec.images:
        blob, key = prepare_image(read_source(src), opts)
        blobs.append(blob)
        keys.append(key)
    if not blobs:
        image_bytes = None
    else:
        image_bytes = blobs if multi_image else blobs[0]
    row = {
        "conversations": json.dumps(msgs, ensure_ascii=False),
        "image_bytes": image_bytes,
        "image_names": ",".join(str(n) for n in rec.names) if rec.names else None,
    }
    for c in extra_columns:
        row[c] = as_text(rec.extra.get(c))
    return row, (b"".join(keys) if keys else None)


def as_text(v) -> str | None:
    if v is None or isinstance(v, str):
        return v
    return json.dumps(v, ensure_ascii=False, default=str)


# ----------------------------------------------------------------------------------------------
# the pipeline shared by every converter

def run_conversion(records: Iterable[Record], out, opts: ConvertOptions, multi_image: bool,
                   total: int | None = None, extra_columns=(), desc: str = "convert") -> ConvertResult:
    stem = output_stem(out)
    schema = output_schema(multi_image, extra_columns)
    split = opts.val_fraction > 0
    staging = stem.with_name(f".{stem.name}.staging")
    sink = ShardWriter(staging if split else stem, schema, None if split else opts.shard_rows,
                       opts.row_group_rows)
    result = ConvertResult()
    first_seen = {}      # image hash key -> (row, where) of the first written row showing it
    groups = []          # per written row: the row that first showed its image(s) (for the split)
    try:
        for rec in tqdm(records, total=total, desc=desc, unit="row", disable=not opts.progress):
            result.rows_read += 1
            try:
                row, key = convert_record(rec, opts, multi_image, extra_columns)
            except (BadRow, ImageError) as e:
                result.bad.append(Problem(rec.row, rec.where, e.kind, str(e)))
                continue
            if key is not None and key in first_seen:
                first_row, first_where = first_seen[key]
                if opts.dedupe:
                    result.duplicates.append(Problem(rec.row, rec.where, "duplicate_image",
                                                     f"same image as {first_where}"))
                    continue
                result.shared_images += 1
                groups.append(first_row)
            else:
                if key is not None:
                    first_seen[key] = (rec.row, rec.where)
                groups.append(rec.row)
            sink.add(row)
        files = sink.close()
    except BaseException:
        sink.abort()
        raise
    if split:
        try:
            result.files, result.written = split_file(files[0], stem, schema, opts, groups)
        finally:
            Path(files[0]).unlink(missing_ok=True)
    else:
        result.files, result.written = {"all": files}, {"all": sink.rows}
    finish(result, opts)
    return result


def val_count(n: int, fraction: float) -> int:
    """round(n * fraction), but at least 1 and at most n - 1 when there are two or more rows."""
    k = round(n * fraction)
    if fraction > 0 and n >= 2:
        k = min(max(k, 1), n - 1)
    return k


def split_file(staging: str, stem: Path, schema: pa.Schema, opts: ConvertOptions, groups: list[int]):
    """Copy the staging file into `<stem>_train` / `<stem>_val`. `groups[i]` names the picture of row i;
    val_count(distinct pictures) of them are picked by seed, and their rows go to val together."""
    pf = pq.ParquetFile(staging)
    distinct = sorted(set(groups))
    val = set(random.Random(opts.seed).sample(distinct, val_count(len(distinct), opts.val_fraction)))
    sinks = {name: ShardWriter(stem.with_name(f"{stem.name}_{name}"), schema, opts.shard_rows,
                               opts.row_group_rows) for name in ("train", "val")}
    i = 0
    try:
        for batch in pf.iter_batches(batch_size=opts.row_group_rows):
            for row in batch.to_pylist():
                sinks["val" if groups[i] in val else "train"].add(row)
                i += 1
        files = {name: s.close() for name, s in sinks.items()}
    except BaseException:
        for s in sinks.values():
            s.abort()
        raise
    return files, {name: s.rows for name, s in sinks.items()}


def finish(result: ConvertResult, opts: ConvertOptions) -> None:
    if not opts.quiet:
        print(result.report())
    if opts.report_json:
        Path(opts.report_json).write_text(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------------
# (a) LLaVA-style JSON

def llava_messages(conv) -> list[dict]:
    """LLaVA turns {"from": human|gpt, "value"} (or already {"role", "content"}) -> role/content dicts."""
    if isinstance(conv, str):
        return conv                       # a JSON string: parse_conversations decodes it
    if not isinstance(conv, list):
        raise BadRow("invalid_json", "'conversations' must be a list of turns")
    out = []
    for m in conv:
        if not isinstance(m, dict):
            raise BadRow("wrong_roles", "each turn must be an object")
        out.append({"role": m.get("from", m.get("role")), "content": m.get("value", m.get("content"))})
    return out


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


def llava_records(items: list, images_dir: Path, keep_columns=()) -> Iterator[Record]:
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
                rec.images = [images_dir / p for p in paths]
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
    items = load_llava_items(json_path)
    multi = any(isinstance(it, dict) and isinstance(it.get("image", it.get("images")), list)
                and len(it.get("image", it.get("images"))) > 1 for _, it in items)
    return run_conversion(llava_records(items, images_dir, keep_columns), out, opts, multi,
                          total=len(items), extra_columns=tuple(keep_columns), desc="llava")


# ----------------------------------------------------------------------------------------------
# (b) a folder of images + captions.jsonl or a CSV

FILE_KEYS = ("file", "image", "file_name", "filename", "path")
CAPTION_KEYS = ("caption", "text")
CSV_HEADER_NAMES = {"file", "filename", "file_name", "image", "image_path", "path", "name"}


def caption_prompt(seed: int, row: int, prompts=CAPTION_PROMPTS) -> str:
    """The user prompt for a caption row: chosen by (seed, row), the same on every run."""
    return prompts[random.Random(f"{seed}:{row}").randrange(len(prompts))]


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


def caption_records(entries: list[tuple], images_dir: Path, seed: int, prompts) -> Iterator[Record]:
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
                rec.images, rec.names = [images_dir / file], [file]
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
    if path.suffix.lower() in (".csv", ".tsv", ".txt"):
        entries = csv_caption_entries(path, images_dir)
    else:
        entries = jsonl_caption_entries(path)
    return run_conversion(caption_records(entries, images_dir, opts.seed, tuple(prompts)), out, opts,
                          multi_image=False, total=len(entries), desc="captions")


# ----------------------------------------------------------------------------------------------
# (c) Hugging Face `datasets` parquet exports

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


def hf_images(value, base_dir: Path, row: int) -> tuple[list, list]:
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
            sources.append(Path(path) if Path(path).is_absolute() else base_dir / path)
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
               batch_rows: int) -> Iterator[Record]:
    index = 0
    for f in files:
        base = images_dir if images_dir is not None else f.parent
        for batch in pq.ParquetFile(f).iter_batches(batch_size=batch_rows, columns=cols.needed()):
            for row in batch.to_pylist():
                rec = Record(index, f"{f.name} row {index}")
                try:
                    if cols.image:
                        rec.images, rec.names = hf_images(row.get(cols.image), base, index)
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
                         opts.row_group_rows)
    return run_conversion(records, out, opts, multi, total=total, extra_columns=cols.keep, desc="hf")
