"""Deterministic data order, split across processes and resumable at any optimizer step.

Epoch e visits a permutation of all rows drawn from seed + e. Each optimizer step consumes one global
batch of G = batch_size x grad_accum x world_size rows from that order; micro-step m of rank r takes
rows [m*world + r]-th slice of batch_size. The position in the data is therefore just
(epoch, rows consumed), independent of the number of processes, so a run resumed with another world
size continues from the same row (rounded down to its global batch).
"""
from __future__ import annotations

import torch


class StepSampler:
    def __init__(self, n: int, batch_size: int, grad_accum: int = 1, world: int = 1, rank: int = 0,
                 seed: int = 0, shuffle: bool = True, epoch: int = 0, start: int = 0):
        self.n, self.bs, self.accum, self.world, self.rank = n, batch_size, grad_accum, world, rank
        self.seed, self.shuffle, self.epoch, self.start = seed, shuffle, epoch, start

    @property
    def global_batch(self) -> int:
        return self.bs * self.accum * self.world

    def order(self, epoch: int) -> list[int]:
        if not self.shuffle:
            return list(range(self.n))
        g = torch.Generator().manual_seed(self.seed + epoch)
        return torch.randperm(self.n, generator=g).tolist()

    def steps_per_epoch(self) -> int:
        return max(1, self.n // self.global_batch) if self.n >= self.global_batch else 1

    def __iter__(self):
        order = self.order(self.epoch)
        g = self.global_batch
        step_start = self.start
        while step_start < self.n:
            chunk = order[step_start:step_start + g]
            if len(chunk) < g and step_start > 0:
                return                      # drop the last incomplete global batch
            for m in range(self.accum):
                lo = (m * self.world + self.rank) * self.bs
                part = chunk[lo:lo + self.bs]
                yield part
            step_start += g

    def __len__(self):
        return self.steps_per_epoch() * self.accum
