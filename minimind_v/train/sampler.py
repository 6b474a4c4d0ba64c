"""Deterministic data order, split across processes, resumable at any optimizer step.

Epoch e visits a permutation of all rows drawn from seed + e. Each optimizer step consumes one global
batch of G = batch_size x grad_accum x world rows from that order:

    rows order[c : c + G]          c = rows consumed so far in this epoch
    micro-step m of rank r takes   the ((m * world + r) * batch_size)-th slice of batch_size rows

so with 2 processes and no accumulation, rank 0 and rank 1 take exactly the rows that micro-steps 0
and 1 of one process with grad_accum 2 take. The position in the data is just (epoch, rows consumed),
which does not depend on the number of processes: a run resumed with another world size starts at the
same row (no row repeated or skipped). The last incomplete global batch of an epoch is dropped.

`SeededRows` makes every random draw a row makes (augmentation, sampling) depend only on
(seed, epoch, row): each row is read with Python's, NumPy's and torch's CPU generators seeded from those
three numbers, and the caller's generator states are put back afterwards. Worker count, which worker
reads a row, world size and resume points therefore cannot change a row's random numbers.
"""
from __future__ import annotations

import random

import numpy as np
import torch
from torch.utils.data import Dataset


class StepSampler:
    """A batch sampler (yields lists of row indices) for one rank; set `epoch` and `start` before iterating."""

    def __init__(self, n: int, batch_size: int, grad_accum: int = 1, world: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True, epoch: int = 0, start: int = 0):
        if batch_size < 1 or grad_accum < 1 or world < 1 or not 0 <= rank < world:
            raise ValueError(f"bad sampler shape: batch_size={batch_size} grad_accum={grad_accum} "
                             f"world={world} rank={rank}")
        self.n, self.bs, self.accum, self.world, self.rank = n, batch_size, grad_accum, world, rank
        self.seed, self.shuffle, self.epoch, self.start = seed, shuffle, epoch, start

    @property
    def global_batch(self) -> int:
        return self.bs * self.accum * self.world

    def order(self, epoch: int) -> list[int]:
        """The epoch's row order: the same in every process and every run with this seed."""
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def steps_per_epoch(self) -> int:
        """Optimizer steps in a full epoch (at least one, even when the data is smaller than G)."""
        return max(1, self.n // self.global_batch)

    def steps_left(self, start: int) -> int:
        """Optimizer steps still to come in the epoch when `start` rows are already consumed."""
        g = self.global_batch
        if start == 0:
            return self.steps_per_epoch()
        return max(0, (self.n - start) // g)

    def __iter__(self):
        order = self.order(self.epoch)
        g = self.global_batch
        at = self.start
        while at < self.n:
            chunk = order[at:at + g]
            if len(chunk) < g and at > 0:
                return                      # the last incomplete global batch is dropped
            for m in range(self.accum):
                lo = (m * self.world + self.rank) * self.bs
                yield chunk[lo:lo + self.bs]
            at += g

    def __len__(self):
        return self.steps_left(self.start) * self.accum


def row_seed(seed: int, epoch: int, index: int) -> int:
    """A 63-bit seed for one row in one epoch (splitmix-style mixing, stable across Python runs)."""
    x = (seed * 0x9E3779B97F4A7C15 + epoch * 0xBF58476D1CE4E5B9 + index * 0x94D049BB133111EB) % (1 << 64)
    x ^= x >> 31
    x = (x * 0xD6E8FEB86659FD93) % (1 << 64)
    x ^= x >> 32
    return x & ((1 << 63) - 1)


class SeededRows(Dataset):
    """Wraps a dataset so that row i of epoch e always sees the same random numbers (see the module doc)."""

    def __init__(self, ds, seed: int, epoch: int = 0):
        self.ds, self.seed, self.epoch = ds, seed, epoch

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i: int):
        s = row_seed(self.seed, self.epoch, int(i))
        saved = (random.getstate(), np.random.get_state(), torch.get_rng_state())
        random.seed(s)
        np.random.seed(s % (1 << 32))
        torch.default_generator.manual_seed(s)     # the CPU generator only: CUDA's stays the training loop's
        try:
            return self.ds[i]
        finally:
            random.setstate(saved[0])
            np.random.set_state(saved[1])
            torch.set_rng_state(saved[2])
