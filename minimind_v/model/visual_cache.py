"""Visual tokens of recently seen pictures, so that later turns about a picture skip the encoder.

Both ways of chatting receive a conversation's pictures again with every turn: `pipeline.VLM` (the
Python API and `minimind-v chat`) and the server's engine (`serve/engine.py`, where OpenAI-style clients
resend the whole conversation). Each keeps one `VisualTokenCache`, keyed by a hash of the picture
(the caller chooses what it hashes), least recently used first out.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Callable

import torch


class VisualTokenCache:
    def __init__(self, size: int):
        self.size = size                                  # pictures kept; 0 keeps none
        self.entries: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.encoded = 0                                  # pictures that went through the encoder
        self.reused = 0                                   # pictures served from the cache

    def get(self, keys: list[str], encode: Callable[[list[int]], torch.Tensor]) -> torch.Tensor:
        """(len(keys), L, H) visual tokens. `encode(indices)` is called once, with the positions (into
        keys) of the pictures not in the cache, one per distinct key, and returns their tokens in order."""
        new = {}
        for i, k in enumerate(keys):
            if k not in self.entries and k not in new:
                new[k] = i
        found = {k: self.entries[k] for k in keys if k in self.entries}
        if new:
            found.update(zip(new, encode(list(new.values()))))
        self.encoded += len(new)
        self.reused += len(keys) - len(new)
        if self.size > 0:
            for k in keys:
                self.entries[k] = found[k]
                self.entries.move_to_end(k)
            while len(self.entries) > self.size:
                self.entries.popitem(last=False)
        return torch.stack([found[k] for k in keys])
