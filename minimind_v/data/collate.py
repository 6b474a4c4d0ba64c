"""Batching: pad to the batch's longest row (default), pad to max_length (the original's way, kept for
benchmarks), or pack several rows into each sequence.

Why packing: real rows are far shorter than max_length, so padding to max_length spends most of the
compute on padding, and even padding to the batch's longest row wastes a good part of it (the shares for
the published sets are in docs/perf.md). Packing puts rows one after another (first-fit decreasing) into sequences of at most
max_length. Exactness is kept by three things:

  * `seq_ids` (B, T) say which row each token belongs to; the model turns them into a block-diagonal
    causal mask (model/llm.py `build_mask`), so a token attends only to earlier tokens of its own row;
  * `position_ids` restart at 0 for each row, so RoPE sees the same positions as unpacked;
  * a row's first label is -100, so the last token of one row never learns to predict the next row.

Images are concatenated in the order their placeholders take in the packed sequences, so splicing by
count (64 features per image, in order) stays exact. `image_keys` follow the same order (content
hashes used by the frozen-encoder cache, train/encoder_cache.py).

Every count the training log needs (samples, real tokens, padded tokens, label tokens, images, the sum
of squared row lengths for the attention FLOPs) is computed here on the host, and so are the flat
positions of the labels (`label_index`, which the model uses to pick the positions that go through
lm_head), so the training step never has to read anything back from the device.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .parquet import Sample, Skipped

MODES = ("longest", "max", "pack")
_TENSORS = ("input_ids", "labels", "pixel_values", "position_ids", "seq_ids", "label_index")


@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    seq_ids: torch.Tensor | None = None
    label_index: torch.Tensor | None = None   # flat positions t in (B*T) whose next label is set
    n_samples: int = 0
    n_real_tokens: int = 0            # tokens that are not padding
    n_tokens: int = 0                 # tokens processed (padding included)
    n_label_tokens: int = 0           # tokens the loss is computed on (after the one-token shift)
    n_images: int = 0
    sum_sq_len: int = 0               # sum over rows of length^2 (attention cost of causal rows)
    image_keys: list = field(default_factory=list)   # one content hash per image, in pixel_values order
    skipped: Counter = field(default_factory=Counter)
    indices: list = field(default_factory=list)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        for name in _TENSORS:
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(device, non_blocking=non_blocking))
        return self

    def pin_memory(self) -> "Batch":
        for name in _TENSORS:
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.pin_memory())
        return self


def pack_rows(lengths: list[int], max_length: int) -> list[list[int]]:
    """Group row indices into bins whose total length is at most max_length, few bins, evenly filled.

    First-fit decreasing (rows longest first into the first bin with room) decides how many bins are
    needed; then the same rows are spread over that many bins longest-first onto the least-filled bin,
    and that layout is kept when it fits and has a shorter longest bin. The batch is padded to its
    longest bin, so even bins mean little padding: rows of 260, 250, 240, 230 become 490 + 490 instead
    of 750 + 230. Deterministic (ties keep the original order). A row longer than max_length gets a
    bin of its own (the renderer already truncates rows, so only a caller's longer rows do that)."""
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    bins: list[list[int]] = []
    room: list[int] = []
    for i in order:
        n = lengths[i]
        for b, r in enumerate(room):
            if n <= r:
                bins[b].append(i)
                room[b] -= n
                break
        else:
            bins.append([i])
            room.append(max_length - n)
    if len(bins) < 2:
        return bins
    even: list[list[int]] = [[] for _ in bins]
    load = [0] * len(bins)
    for i in order:
        b = min(range(len(load)), key=lambda k: (load[k], k))
        even[b].append(i)
        load[b] += lengths[i]
    if max(load) <= max_length and max(load) < max_length - min(room):
        return even
    return bins


class Collator:
    """Turns a list of `Sample` / `Skipped` into one `Batch` (mode: longest | max | pack)."""

    def __init__(self, pad_id: int = 0, mode: str = "longest", max_length: int | None = None):
        if mode not in MODES:
            raise ValueError(f"unknown padding mode {mode!r}: use longest, max or pack")
        if mode in ("max", "pack") and not max_length:
            raise ValueError(f"mode {mode!r} needs max_length")
        self.pad_id, self.mode, self.max_length = pad_id, mode, max_length

    def __call__(self, items) -> Batch:
        skipped = Counter(it.kind for it in items if isinstance(it, Skipped))
        samples = [it for it in items if isinstance(it, Sample)]
        if not samples:
            return Batch(torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long), skipped=skipped)
        b = self._pack(samples) if self.mode == "pack" else self._pad(samples)
        lens = [len(s.input_ids) for s in samples]
        b.skipped = skipped
        b.n_samples = len(samples)
        b.n_real_tokens = sum(lens)
        b.n_tokens = b.input_ids.numel()
        rows, cols = (b.labels[:, 1:] != -100).nonzero(as_tuple=True)
        b.label_index = rows * b.labels.shape[1] + cols
        b.n_label_tokens = int(b.label_index.numel())
        b.n_images = 0 if b.pixel_values is None else int(b.pixel_values.shape[0])
        b.sum_sq_len = sum(n * n for n in lens)
        b.indices = [s.index for s in samples]
        return b

    @staticmethod
    def _images(ordered) -> tuple[torch.Tensor | None, list]:
        pv = [s.pixel_values for s in ordered if s.pixel_values is not None]
        keys = []
        for s in ordered:
            if s.pixel_values is not None:
                n = s.pixel_values.shape[0]
                keys += list(s.image_keys) if len(s.image_keys) == n else [None] * n
        return (torch.cat(pv) if pv else None), keys

    def _pad(self, samples) -> Batch:
        t = max(len(s.input_ids) for s in samples) if self.mode == "longest" else self.max_length
        ids = torch.full((len(samples), t), self.pad_id, dtype=torch.long)
        labels = torch.full((len(samples), t), -100, dtype=torch.long)
        for i, s in enumerate(samples):
            ids[i, : len(s.input_ids)] = s.input_ids
            labels[i, : len(s.labels)] = s.labels
        pv, keys = self._images(samples)
        return Batch(ids, labels, pv, image_keys=keys)

    def _pack(self, samples) -> Batch:
        bins = pack_rows([len(s.input_ids) for s in samples], self.max_length)
        t = max(sum(len(samples[i].input_ids) for i in members) for members in bins)
        shape = (len(bins), t)
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        labels = torch.full(shape, -100, dtype=torch.long)
        pos = torch.zeros(shape, dtype=torch.long)
        seq = torch.full(shape, -1, dtype=torch.long)
        for b, members in enumerate(bins):
            at = 0
            for k, i in enumerate(members):
                s = samples[i]
                n = len(s.input_ids)
                ids[b, at:at + n] = s.input_ids
                labels[b, at:at + n] = s.labels
                labels[b, at] = -100          # a row's first token is never predicted from the previous row
                pos[b, at:at + n] = torch.arange(n)
                seq[b, at:at + n] = k
                at += n
            # padding after the last row: its own segment id (-1), positions continue from 0; no row
            # attends to it and its labels are -100
            pos[b, at:] = torch.arange(t - at)
        ordered = [samples[i] for members in bins for i in members]
        pv, keys = self._images(ordered)
        return Batch(ids, labels, pv, position_ids=pos, seq_ids=seq, image_keys=keys)
