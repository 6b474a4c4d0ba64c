"""What every converter shares: LLaVA JSON, image folders with captions and Hugging Face parquet
exports (the readers in llava.py, captions.py, hf.py) all end here, in the parquet format the trainer reads.

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

import glob
import hashlib
import io
import json
import os
import random
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image
from tqdm import tqdm

from ...image import ImageError, image_header, open_image
from ...data.chatml import IMAGE_MARKER, BadRow, check_order, count_markers, parse_conversations
from ...outputs import check_output, staged_output

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
    overwrite: bool = False          # replace existing output files (outputs.py); an input never
    allow_outside: bool = False      # read pictures named outside the image folder (absolute, ../)
    inputs: tuple = ()               # what the converter reads (set by it): no output may land on these

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


def check_outputs(out, opts: ConvertOptions) -> list[Path]:
    """Every file this conversion may write, checked before any row is read (outputs.check_output: an
    existing one needs --overwrite, none may be or lie inside an input). Returns the shard files that
    exist now, so a replacing run can remove the ones it did not rewrite (no stale shard stays)."""
    stem = output_stem(out)
    names = [stem.name] if opts.val_fraction == 0 else [f"{stem.name}_train", f"{stem.name}_val"]
    planned, existing = [], []
    for n in names:
        planned.append(stem.with_name(n + ".parquet"))
        if opts.shard_rows is not None:
            planned.append(stem.with_name(n + "-00000.parquet"))
            existing += sorted(stem.parent.glob(glob.escape(n) + "-" + "[0-9]" * 5 + ".parquet"))
    if opts.report_json:
        planned.append(Path(opts.report_json))
    for p in dict.fromkeys(planned + existing):
        check_output(p, opts.inputs, overwrite=opts.overwrite)
    return existing


def image_path(root: Path, name: str, allow_outside: bool = False) -> Path:
    """`name` (from the data) inside the image folder `root`. A name that leads outside it (absolute, `..`,
    a link out) is a bad row unless `allow_outside`; decided from the path alone, before anything is
    opened, so the report never tells whether such a file exists."""
    p = Path(name)
    full = p if p.is_absolute() else Path(root) / p
    if not allow_outside:
        r, f = Path(root).resolve(), full.resolve()
        if f != r and r not in f.parents:
            raise BadRow("outside_folder", f"image path {name!r} leads outside the image folder {root} (not read; "
                                           f"--allow-outside reads such paths)")
    return full


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
    stale = check_outputs(out, opts)
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
    written = {str(Path(f)) for fs in result.files.values() for f in fs}
    for old in stale:                   # --overwrite with shards: an old shard the new run did not rewrite
        if str(old) not in written:
            old.unlink(missing_ok=True)
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
        with staged_output(opts.report_json, opts.inputs, overwrite=opts.overwrite) as stage:
            stage.write_text(json.dumps(result.as_dict(), indent=2, ensure_ascii=False) + "\n")


# ----------------------------------------------------------------------------------------------
# helpers the readers share

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


def caption_prompt(seed: int, row: int, prompts=CAPTION_PROMPTS) -> str:
    """The user prompt for a caption row: chosen by (seed, row), the same on every run."""
    return prompts[random.Random(f"{seed}:{row}").randrange(len(prompts))]
