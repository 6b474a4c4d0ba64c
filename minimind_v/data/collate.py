"""Batching: pad to the batch's longest row (default), pad to max_length (the original's way, kept for
benchmarks), or pack several rows into each sequence.

Packing puts rows one after another (first-fit, longest first) into sequences of at most max_length;
`seq_ids` tell the model which row each token belongs to (attention stays inside a row) and
`position_ids` restart at 0 for each row, so the loss equals the unpacked one. Images are reordered to
follow the order their placeholders take in the packed sequences, so splicing by count stays exact.
"""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import torch

from .parquet import Sample, Skipped


@dataclass
class Batch:
    input_ids: torch.Tensor
    labels: torch.Tensor
    pixel_values: torch.Tensor | None = None
    position_ids: torch.Tensor | None = None
    seq_ids: torch.Tensor | None = None
    n_samples: int = 0
    n_real_tokens: int = 0            # tokens that are not padding
    n_tokens: int = 0                 # tokens processed (padding included)
    skipped: Counter = field(default_factory=Counter)
    indices: list = field(default_factory=list)

    def to(self, device, non_blocking: bool = False) -> "Batch":
        for name in ("input_ids", "labels", "pixel_values", "position_ids", "seq_ids"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.to(device, non_blocking=non_blocking))
        return self

    def pin_memory(self) -> "Batch":
        for name in ("input_ids", "labels", "pixel_values", "position_ids", "seq_ids"):
            v = getattr(self, name)
            if v is not None:
                setattr(self, name, v.pin_memory())
        return self


class Collator:
    def __init__(self, pad_id: int = 0, mode: str = "longest", max_length: int | None = None):
        if mode not in ("longest", "max", "pack"):
            raise ValueError(f"unknown padding mode {mode!r}: use longest, max or pack")
        if mode in ("max", "pack") and not max_length:
            raise ValueError(f"mode {mode!r} needs max_length")
        self.pad_id, self.mode, self.max_length = pad_id, mode, max_length

    def __call__(self, items) -> Batch:
        skipped = Counter(it.kind for it in items if isinstance(it, Skipped))
        samples = [it for it in items if isinstance(it, Sample)]
        if not samples:
            return Batch(torch.zeros(0, 1, dtype=torch.long), torch.zeros(0, 1, dtype=torch.long), skipped=skipped)
        if self.mode == "pack":
            b = self._pack(samples)
        else:
            b = self._pad(samples)
        b.skipped = skipped
        b.n_samples = len(samples)
        b.n_real_tokens = sum(len(s.input_ids) for s in samples)
        b.n_tokens = b.input_ids.numel()
        b.indices = [s.index for s in samples]
        return b

    def _pad(self, samples) -> Batch:
        t = max(len(s.input_ids) for s in samples) if self.mode == "longest" else self.max_length
        ids = torch.full((len(samples), t), self.pad_id, dtype=torch.long)
        labels = torch.full((len(samples), t), -100, dtype=torch.long)
        for i, s in enumerate(samples):
            ids[i, : len(s.input_ids)] = s.input_ids
            labels[i, : len(s.labels)] = s.labels
        pv = [s.pixel_values for s in samples if s.pixel_values is not None]
        return Batch(ids, labels, torch.cat(pv) if pv else None)

    def _pack(self, samples) -> Batch:
        order = sorted(range(len(samples)), key=lambda i: -len(samples[i].input_ids))
        bins, room = [], []
        for i in order:
            n = len(samples[i].input_ids)
            for b, r in enumerate(room):
                if n <= r:
                    bins[b].append(i)
                    room[b] -= n
                    break
            else:
                bins.append([i])
                room.append(self.max_length - n)
        t = max(self.max_length - r for r in room)
        shape = (len(bins), t)
        ids = torch.full(shape, self.pad_id, dtype=torch.long)
        labels = torch.full(shape, -100, dtype=torch.long)
        pos = torch.zeros(shape, dtype=torch.long)
        seq = torch.full(shape, -1, dtype=torch.long)
        pv = []
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
                if s.pixel_values is not None:
                    pv.append(s.pixel_values)
                at += n
            # padding after the last row: its own segment id, positions continue (never attended by rows)
            pos[b, at:] = torch.arange(t - at)
        return Batch(ids, labels, torch.cat(pv) if pv else None, position_ids=pos, seq_ids=seq)
