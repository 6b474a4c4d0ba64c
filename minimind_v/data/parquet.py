"""Reader for the published parquet format, and the dataset that turns rows into training samples.

Columns: `conversations` (JSON string of {"role", "content"} messages; `<image>` marks a picture),
`image_bytes` (binary, a list of binaries in marker order, or null/empty for text-only rows),
`image_names` (string). Extra columns (`answer`, `type`, `task`) are kept for evaluation.

Files are opened memory-mapped and read one row group at a time, lazily in each DataLoader worker,
so no worker copies the whole file. A bad row never crashes a run: `__getitem__` returns a `Skipped`
record naming the problem, the collator drops it, and the training loop counts it by kind.
"""
from __future__ import annotations

import bisect
import os
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import torch
from torch.utils.data import Dataset

from ..model.vision import DEFAULT_MAX_PIXELS, ImageError, image_to_patches, open_image
from .chat import BadRow, check_order, count_markers, parse_conversations, render


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
        n = 0
        for fi, f in enumerate(self.files):
            meta = pq.ParquetFile(f).metadata
            for g in range(meta.num_row_groups):
                self._starts.append(n)
                self._groups.append((fi, g))
                n += meta.row_group(g).num_rows
        self.n = n
        self._pid, self._handles, self._cached = None, {}, (None, None)
        schema = pq.read_schema(self.files[0]) if self.files else None
        self.available = set(schema.names) if schema is not None else set()

    def __len__(self):
        return self.n

    def _file(self, fi: int):
        if self._pid != os.getpid():      # a forked worker must open its own handles
            self._pid, self._handles, self._cached = os.getpid(), {}, (None, None)
        if fi not in self._handles:
            self._handles[fi] = pq.ParquetFile(self.files[fi], memory_map=True)
        return self._handles[fi]

    def __getitem__(self, i: int) -> dict:
        if not 0 <= i < self.n:
            raise IndexError(i)
        k = bisect.bisect_right(self._starts, i) - 1
        if self._pid != os.getpid() or self._cached[0] != k:
            fi, g = self._groups[k]
            cols = [c for c in self.columns if c in self.available] if self.columns else None
            table = self._file(fi).read_row_group(g, columns=cols)
            self._cached = (k, table)
        table = self._cached[1]
        j = i - self._starts[k]
        return {name: table.column(name)[j].as_py() for name in table.column_names}

    def __getstate__(self):                  # do not pickle open handles into workers
        d = dict(self.__dict__)
        d["_handles"], d["_cached"], d["_pid"] = {}, (None, None), None
        return d


def row_images(row: dict) -> list:
    imgs = row.get("image_bytes")
    if imgs is None:
        return []
    if isinstance(imgs, (bytes, bytearray)):
        return [imgs] if len(imgs) else []
    return list(imgs)


class VLMDataset(Dataset):
    """Parquet rows -> `Sample` (tokens, labels, image patches) or `Skipped`."""

    def __init__(self, files, tokenizer, cfg, max_length: int, think_block: bool = False,
                 max_pixels: int = DEFAULT_MAX_PIXELS, blind: bool = False):
        self.rows = ParquetRows(files, ["conversations", "image_bytes"])
        self.tok, self.cfg, self.max_length = tokenizer, cfg, max_length
        self.think_block, self.max_pixels, self.blind = think_block, max_pixels, blind

    def __len__(self):
        return len(self.rows)

    def __getitem__(self, i: int):
        try:
            row = self.rows[i]
            return self.build(row, i)
        except (BadRow, ImageError) as e:
            return Skipped(e.kind, i, str(e))

    def build(self, row: dict, i: int) -> Sample:
        msgs = parse_conversations(row.get("conversations"))
        check_order(msgs)
        images = row_images(row)
        n_markers = count_markers(msgs)
        if any(b is None for b in images):
            raise BadRow("null_image", "a null image in the image list")
        if n_markers != len(images):
            kind = "null_image" if n_markers and not images else "marker_mismatch"
            raise BadRow(kind, f"{n_markers} <image> marker(s) but {len(images)} image(s)")
        r = render(msgs, self.tok, self.cfg.image_token_len, self.max_length, think_block=self.think_block)
        pics = [open_image(b, self.max_pixels) for b in images[:r.n_images]]
        if self.blind:
            from ..model.vision import blank_image
            pics = [blank_image(self.cfg.vision) for _ in pics]
        pv = torch.stack([image_to_patches(p, self.cfg.vision) for p in pics]) if pics else None
        return Sample(torch.tensor(r.ids), torch.tensor(r.labels), pv, i)
