"""Reader for the published parquet format, and the dataset that turns rows into training samples.

Columns: `conversations` (JSON string of {"role", "content"} messages; `<image>` marks a picture),
`image_bytes` (binary, a list of binaries in marker order, or null/empty for text-only rows),
`image_names` (string; optional, the 0420 format has none). Conversations may also be a list of
messages (0420), and a 0420 text-only row's stand-in picture is dropped (data/placeholder.py). Extra columns (`answer`, `type`, `task`) are kept for evaluation.

Files are opened memory-mapped and read one row group at a time, lazily in each DataLoader worker,
so no worker copies the whole file. A bad row never crashes a run: `__getitem__` returns a `Skipped`
record naming the problem, the collator drops it, and the training loop counts it by kind.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from ..hf.pixels import pixel_batch
from ..image import DEFAULT_MAX_PIXELS, TRAIN_MAX_ASPECT, TRAIN_MIN_SIDE, ImageError, open_image
from .augment import augment_image
from .chatml import BadRow, check_order, count_markers, parse_conversations, render
from .placeholder import is_placeholder


@dataclass
class Sample:
    input_ids: torch.Tensor             # (T,) int64
    labels: torch.Tensor                # (T,) int64, -100 where not trained
    pixel_values: torch.Tensor | None   # (n_images, P, 3pp) float32, or None
    index: int = -1
    image_keys: list = field(default_factory=list)   # content hashes (for the encoder cache)


@dataclass
class Skipped:
    kind: str
    index: int
    msg: str = ""


class ParquetRows:
    """Random access to rows of one or more parquet files, one row group in memory at a time."""

    def __init__(self, files, columns: list[str] | None = None):
        self.files = [str(f) for f in ([files] if isinstance(files, (str, Path)) else files)]
        self.columns = columns
        self._starts, self._groups = [], []     # global row index where each row group starts
        self._metas = []                         # parsed footers: reopening a file costs no footer read
        n = 0
        for fi, f in enumerate(self.files):
            meta = pq.ParquetFile(f).metadata
            self._metas.append(meta)
            for g in range(meta.num_row_groups):
                self._starts.append(n)
                self._groups.append((fi, g))
                n += meta.row_group(g).num_rows
        self.n = n
        self._pid, self._cached = None, (None, None)
        schema = pq.read_schema(self.files[0]) if self.files else None
        self.available = set(schema.names) if schema is not None else set()

    def __len__(self):
        return self.n

    def _read_group(self, fi: int, g: int, cols):
        """Map the file, read one row group, unmap it. A mapping kept open would let the file's pages pile
        up in this process's resident memory as random reads touch them (toward the whole file's size)."""
        if self._pid != os.getpid():      # a forked worker starts with nothing cached
            self._pid, self._cached = os.getpid(), (None, None)
        pf = pq.ParquetFile(self.files[fi], memory_map=True, metadata=self._metas[fi])
        try:
            return pf.read_row_group(g, columns=cols)
        finally:
            pf.close()

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        k = bisect.bisect_right(self._starts, i) - 1
        if self._pid != os.getpid() or self._cached[0] != k:
            fi, g = self._groups[k]
            cols = [c for c in self.columns if c in self.available] if self.columns else None
            table = self._read_group(fi, g, cols)
            self._cached = (k, table)
        table = self._cached[1]
        j = i - self._starts[k]
        return {name: _cell(table.column(name)[j]) for name in table.column_names}

    def __getstate__(self):                  # do not pickle the cached row group into workers
        d = dict(self.__dict__)
        d["_cached"], d["_pid"] = (None, None), None
        return d


def _cell(scalar):
    """A parquet cell as a Python value; a string cell holding invalid UTF-8 comes back as its raw bytes
    (so that the row is skipped as `invalid_utf8` instead of crashing the reader)."""
    try:
        return scalar.as_py()
    except UnicodeDecodeError:
        return scalar.cast(pa.binary()).as_py()


def validate_row(row: dict) -> tuple[list[dict], list]:
    """The checks that need no tokenizer: conversations parse, roles alternate with a non-empty reply,
    and there is one non-null image per `<image>` marker. Returns (messages, image bytes); raises BadRow."""
    msgs = parse_conversations(row.get("conversations"))
    check_order(msgs)
    raw = row.get("image_bytes")
    images = row_images(row)
    n_markers = count_markers(msgs)
    if not n_markers and images and all(is_placeholder(b) for b in images):
        images = []                   # 0420 text-only row: a stand-in picture that no token refers to
    if any(b is None for b in images):
        raise BadRow("null_image", "a null image in the image list")
    if n_markers and not images:
        if isinstance(raw, (bytes, bytearray)):
            raise BadRow("empty_image", f"{n_markers} <image> marker(s) but the image has zero bytes")
        raise BadRow("null_image", f"{n_markers} <image> marker(s) but no image (null or an empty list)")
    if n_markers != len(images):
        raise BadRow("marker_mismatch", f"{n_markers} <image> marker(s) but {len(images)} image(s)")
    return msgs, images


def row_images(row: dict) -> list:
    """The row's image bytes as a list (empty for a text-only row); `BadRow("bad_image_type")` when the
    column holds something that is not bytes (integers, strings, nested lists)."""
    imgs = row.get("image_bytes")
    if imgs is None:
        return []
    if isinstance(imgs, (bytes, bytearray)):
        return [imgs] if len(imgs) else []
    if not isinstance(imgs, (list, tuple)):
        raise BadRow("bad_image_type", f"image_bytes holds a {type(imgs).__name__}, not bytes or a list of bytes")
    for k, b in enumerate(imgs):
        if b is not None and not isinstance(b, (bytes, bytearray)):
            raise BadRow("bad_image_type", f"image {k} is a {type(b).__name__}, not bytes")
    return list(imgs)


def prepare_row(row: dict, tok, image_token_len: int, max_length: int | None,
                max_pixels: int = DEFAULT_MAX_PIXELS, min_side: int = TRAIN_MIN_SIDE,
                max_aspect: float = TRAIN_MAX_ASPECT, think_block: bool = False,
                control_tokens_in_text: bool = False):
    """The one row validator that training (`VLMDataset`) and `minimind-v data check` share, so they can
    never disagree: structure (`validate_row`), then the rendering and length cut (skipped when `tok` is
    None), then every picture that survives the cut is opened within the limits. Returns
    (Rendered or None, RGB pictures, image bytes); raises BadRow / ImageError naming the kind."""
    msgs, images = validate_row(row)
    r = None
    n = len(images)
    if tok is not None:
        r = render(msgs, tok, image_token_len, max_length, think_block=think_block,
                   control_tokens_in_text=control_tokens_in_text)
        n = r.n_images
    pics = []
    for k, b in enumerate(images[:n]):
        try:
            pics.append(open_image(b, max_pixels, min_side, max_aspect))
        except ImageError as e:
            raise ImageError(e.kind, f"image {k}: {e}") from None
    return r, pics, images


def image_key(data: bytes) -> str:
    """Content hash of an image's bytes: the key of the frozen-encoder cache (train/encoder_cache.py)."""
    import hashlib
    return hashlib.sha256(data).hexdigest()


class VLMDataset(Dataset):
    """Parquet rows -> `Sample` (tokens, labels, image patches) or `Skipped`."""

    def __init__(self, files, tokenizer, cfg, max_length: int, think_block: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, image_keys: bool = False, augment: float = 0.0,
                 control_tokens_in_text: bool = False):
        self.rows = ParquetRows(files, ["conversations", "image_bytes"])
        self.tok, self.cfg, self.max_length = tokenizer, cfg, max_length
        self.think_block, self.max_pixels = think_block, max_pixels
        self.image_keys = image_keys        # hash each picture's bytes (only the encoder cache needs it)
        self.control_tokens_in_text = control_tokens_in_text     # data/chatml.py encode_segments
        self.augment = augment              # strength of data/augment.py's random zoom / shift / light (0: off)

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i: int):
        try:
            row = self.rows[i]
        except (OSError, pa.ArrowException) as e:       # a corrupt page or row group
            return Skipped("unreadable_row", i, str(e))
        try:
            return self.build(row, i)
        except (BadRow, ImageError) as e:
            return Skipped(e.kind, i, str(e))

    def build(self, row: dict, i: int) -> Sample:
        r, pics, images = prepare_row(row, self.tok, self.cfg.image_token_len, self.max_length, self.max_pixels,
                                      think_block=self.think_block,
                                      control_tokens_in_text=self.control_tokens_in_text)
        if self.augment:
            pics = [augment_image(p, self.augment) for p in pics]
        pv = torch.from_numpy(pixel_batch(pics, self.cfg.vision)) if pics else None
        keys = [image_key(b) for b in images[:len(pics)]] if self.image_keys else []
        return Sample(torch.tensor(r.ids), torch.tensor(r.labels), pv, i, image_keys=keys)
