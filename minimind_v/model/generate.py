"""Text generation with a preallocated KV cache: batched, streaming, greedy or sampled.

Prompts of different lengths are left-padded; `key_mask` hides the padding and `position_ids` count
real tokens only, so a prompt's output does not depend on what it is batched with. Images are encoded
once (in the prefill); each decode step feeds one token per row and reads the cache (no concat).
"""
from __future__ import annotations

from typing import Callable, Iterator

import torch

from ..config import SamplingParams
from .llm import KVCache


def sample_next(logits: torch.Tensor, p: SamplingParams, gen: torch.Generator | None) -> torch.Tensor:
    """logits (B, V) -> next ids (B,)."""
    if p.temperature <= 0:
        return logits.argmax(-1)
    logits = logits.float() / p.temperature
    if p.top_k and p.top_k < logits.shape[-1]:
        kth = logits.topk(p.top_k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if p.top_p < 1.0:
        srt, idx = logits.sort(-1, descending=True)
        probs = srt.softmax(-1)
        drop = probs.cumsum(-1) - probs > p.top_p          # keep the smallest set reaching top_p
        srt = srt.masked_fill(drop, float("-inf"))
        logits = torch.full_like(logits, float("-inf")).scatter(-1, idx, srt)
    probs = logits.softmax(-1)
    return torch.multinomial(probs, 1, generator=gen).squeeze(-1)


def left_pad(prompts: list[list[int]], pad_id: int, extra: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Prompts right-aligned into one (B, T) batch, and the key mask (B, T + extra) that marks the real
    tokens (the `extra` columns are for tokens still to come)."""
    t = max(len(p) for p in prompts)
    ids = torch.full((len(prompts), t), pad_id, dtype=torch.long)
    key_mask = torch.zeros(len(prompts), t + extra, dtype=torch.bool)
    for i, p in enumerate(prompts):
        ids[i, t - len(p):] = torch.tensor(p)
        key_mask[i, t - len(p):t] = True
    return ids, key_mask


@torch.inference_mode()
def generate_stream(model, prompts: list[list[int]], params: SamplingParams, pixel_values=None,
                    visual_tokens=None) -> Iterator[torch.Tensor]:
    """Yield the next token ids (B,) step by step; rows that finished keep yielding `-1`."""
    dev = next(model.parameters()).device
    ids, key_mask = left_pad(prompts, model.cfg.pad_token_id, extra=params.max_new_tokens)
    b, t = ids.shape
    ids, key_mask = ids.to(dev), key_mask.to(dev)
    pos = (key_mask[:, :t].long().cumsum(-1) - 1).clamp(min=0)
    dtype = next(model.parameters()).dtype
    cache = KVCache(model.cfg, b, t + params.max_new_tokens, dev, dtype)
    gen = None
    if params.seed is not None and params.temperature > 0:
        gen = torch.Generator(device=dev).manual_seed(params.seed)
    padded = bool((~key_mask[:, :t]).any())
    out = model(ids, pixel_values=pixel_values, visual_tokens=visual_tokens, position_ids=pos,
                key_mask=key_mask[:, :t] if padded else None, cache=cache, logits_to_keep=1, check=True)
    lengths = key_mask[:, :t].sum(-1)
    done = torch.zeros(b, dtype=torch.bool, device=dev)
    stop = torch.tensor(list(params.stop_ids) or [-2], device=dev)
    for step in range(params.max_new_tokens):
        nxt = sample_next(out.logits[:, -1], params, gen)
        nxt = torch.where(done, torch.full_like(nxt, -1), nxt)
        yield nxt
        done = done | torch.isin(nxt, stop)
        if bool(done.all()) or step == params.max_new_tokens - 1:
            return
        key_mask[:, t + step] = True
        feed = nxt.clamp(min=0)[:, None]
        out = model(feed, position_ids=(lengths + step)[:, None], key_mask=key_mask[:, :t + step + 1] if padded else None,
                    cache=cache, logits_to_keep=1)


def generate(model, prompts: list[list[int]], params: SamplingParams, pixel_values=None,
             on_token: Callable[[torch.Tensor], None] | None = None, visual_tokens=None) -> list[list[int]]:
    """All generated ids per prompt (stop token excluded)."""
    outs = [[] for _ in prompts]
    finished = [False] * len(prompts)
    for nxt in generate_stream(model, prompts, params, pixel_values, visual_tokens):
        if on_token:
            on_token(nxt)
        for i, v in enumerate(nxt.tolist()):
            if finished[i] or v < 0:
                continue
            if v in params.stop_ids:
                finished[i] = True
            else:
                outs[i].append(v)
    return outs
