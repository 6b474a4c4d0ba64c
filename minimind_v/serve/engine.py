"""Continuous batching: one decode thread advances every active request by one token per step.

A request (a `Job`) waits in a FIFO queue until a slot is free (`max_batch` slots). The requests
admitted at one step are prefilled together: prompts left-padded into one batch, all their images
through the encoder in one call, as `model/generate.py` does for a batch (a request admitted alone is
exactly `VLM.stream`'s computation). Measured on the CPU demo model, 16 requests with a picture each
(busy 2-core machine): prefilled one by one 265-305 ms, together 106-140 ms. Each row's keys/values
are then copied into the shared `BatchCache`, and from the next step on it decodes together with
every other active request: one forward pass of shape (B, 1) per step, whatever the number of clients.

The shared cache holds all rows in one tensor per layer, (B, kv_heads, L, head_dim). Rows are
right-aligned: a row's tokens occupy columns [start_i, pos), every step writes column `pos` for all
rows. So for row i:

    position id of the fed token = pos - start_i         (tokens that row already has)
    key mask                     = column >= start_i     (columns left of start_i are someone else's past)

A prompt longer than `pos` shifts the whole cache right by (n - pos) columns; when the cache is full,
columns left of min(start_i) (no live row needs them) are dropped before it grows. A finished or
disconnected request's row is removed at once, so its slot is free for the next waiting request.

A chat client sends the whole conversation, pictures included, with every turn, so the engine keeps the
visual tokens of the last `image_cache` pictures (keyed by a hash of their pixels; the same
`model/visual_cache.py` as `pipeline.VLM`): a follow-up question about the same picture skips the
encoder (full size, quiet 2-core CPU: time to first token 464 -> 127 ms, benchmarks/serve_prefill.py).
The tokens reused are those the first request computed, possibly in a batch with other pictures, so a
repeat can differ from a cold run in the last bits of fp32.

Text is produced as `VLM.stream` does (whole UTF-8 characters only); stop strings are cut from the
text and any suffix that could still become a stop string is held back until it is decided.
The engine never talks HTTP: each job gets an `emit(event)` callback (the app turns events into
SSE chunks or a JSON body), and `step()` can be driven by hand in tests.
"""
from __future__ import annotations

import hashlib
import logging
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Callable

import torch

from ..model.generate import SamplingParams, left_pad, sample_next
from ..model.llm import KVCache
from ..model.visual_cache import VisualTokenCache
from ..textstream import TextStream

log = logging.getLogger("minimind_v.serve")


class QueueFull(Exception):
    pass


@dataclass
class Job:
    """One request: prompt ids, pixels, sampling, and where its events go."""
    ids: list[int]
    pixels: torch.Tensor | None
    params: SamplingParams
    # events: ("delta", text) | ("done", finish_reason, prompt_tokens, completion_tokens) | ("error", message)
    emit: Callable[[tuple], None]
    stop: list[str] = field(default_factory=list)
    cancelled: bool = False
    finished: bool = False
    n_out: int = 0
    last: int = -1                     # the token to feed at the next step
    text: TextStream | None = None
    gen: torch.Generator | None = None


class BatchCache(KVCache):
    """A KV cache whose rows come and go (see the module docstring for the layout)."""

    def __init__(self, cfg, device, dtype, chunk: int = 64):
        self.cfg, self.device, self.dtype, self.chunk = cfg, device, dtype, chunk
        self.moves = {"shift": 0, "compact": 0, "grow": 0}      # relayouts so far, by cause
        self.reset()

    def reset(self):
        shape = (0, self.cfg.num_key_value_heads, 0, self.cfg.head_dim)
        self.k = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=self.device, dtype=self.dtype) for _ in range(self.cfg.num_hidden_layers)]
        self.pos, self.max_len, self.starts = 0, 0, []

    @property
    def rows(self) -> int:
        return len(self.starts)

    def _relayout(self, cap: int, shift: int):
        """New capacity `cap`; live columns move `shift` to the right (negative: to the left)."""
        src0 = max(0, -shift)
        new_pos = self.pos + shift
        for lst in (self.k, self.v):
            for i, old in enumerate(lst):
                b, h, _, d = old.shape
                new = torch.zeros((b, h, cap, d), device=self.device, dtype=self.dtype)
                new[:, :, src0 + shift:new_pos] = old[:, :, src0:self.pos]
                lst[i] = new
        self.pos, self.max_len = new_pos, cap
        self.starts = [s + shift for s in self.starts]

    def add(self, ks: list[torch.Tensor], vs: list[torch.Tensor]) -> None:
        """Append a row: per-layer keys/values (1, kv_heads, n, head_dim), right-aligned at `pos`."""
        n = ks[0].shape[2]
        if self.rows == 0:
            self.reset()
        if n > self.pos:
            self.moves["shift"] += self.rows > 0
            self._relayout(max(self.max_len, n) + self.chunk, n - self.pos)
        for lst, src in ((self.k, ks), (self.v, vs)):
            for i, old in enumerate(lst):
                row = torch.zeros((1,) + tuple(old.shape[1:]), device=self.device, dtype=self.dtype)
                row[:, :, self.pos - n:self.pos] = src[i]
                lst[i] = torch.cat([old, row])
        self.starts.append(self.pos - n)

    def keep(self, rows: list[int]) -> None:
        """Keep only these rows (in this order)."""
        if not rows:
            self.reset()
            return
        idx = torch.tensor(rows, device=self.device)
        self.k = [t.index_select(0, idx) for t in self.k]
        self.v = [t.index_select(0, idx) for t in self.v]
        self.starts = [self.starts[r] for r in rows]

    def reserve(self, extra: int) -> None:
        """Make room for `extra` more columns: first drop dead columns on the left, then grow."""
        if self.pos + extra <= self.max_len:
            return
        dead = min(self.starts) if self.starts else self.pos
        if dead > 0:
            self.moves["compact"] += 1
            self._relayout(self.max_len, -dead)
        if self.pos + extra > self.max_len:
            self.moves["grow"] += 1
            self._relayout(self.pos + extra + self.chunk, 0)


class Engine:
    """Owns the model; admits jobs into free slots and steps all of them together."""

    def __init__(self, vlm, max_batch: int = 16, max_queue: int = 256, chunk: int = 64,
                 prefill_tokens: int = 4096, image_cache: int = 64):
        self.model, self.tok = vlm.model, vlm.tok
        self.max_batch, self.max_queue, self.prefill_tokens = max_batch, max_queue, prefill_tokens
        p = next(self.model.parameters())
        self.device, self.dtype = p.device, p.dtype
        self.cache = BatchCache(self.model.cfg, self.device, self.dtype, chunk)
        self.waiting: deque[Job] = deque()
        self.active: list[Job] = []
        self.cond = threading.Condition()
        self.thread: threading.Thread | None = None
        self.stopping = False
        self.pictures = VisualTokenCache(image_cache)     # pixel hash -> visual tokens (model/visual_cache.py)
        self.counters = {"requests": 0, "tokens": 0, "steps": 0, "cancelled": 0, "errors": 0, "peak_batch": 0,
                         "images_encoded": 0, "images_cached": 0}

    # ---- called from request handlers (any thread) ----
    def submit(self, job: Job) -> None:
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting")
            job.text = TextStream(self.tok, job.stop)
            self._prepare(job)
            self.waiting.append(job)
            self.counters["requests"] += 1
            self.cond.notify()

    def cancel(self, job: Job) -> None:
        """The client went away: the job leaves its slot at the next step (or never gets one)."""
        if not job.finished:
            job.cancelled = True
            with self.cond:
                self.cond.notify()

    def stats(self) -> dict:
        return {"active": len(self.active), "waiting": len(self.waiting), "max_batch": self.max_batch,
                "max_queue": self.max_queue, **self.counters}

    # ---- the decode thread ----
    def start(self) -> None:
        if self.thread is None:
            self.stopping = False
            self.thread = threading.Thread(target=self._run, name="minimind-v-engine", daemon=True)
            self.thread.start()

    def stop(self, timeout: float = 10.0) -> None:
        with self.cond:
            self.stopping = True
            self.cond.notify_all()
        if self.thread is not None:
            self.thread.join(timeout)
            self.thread = None
        for job in list(self.active) + list(self.waiting):
            self._send(job, ("error", "the server is shutting down"))
        self.active, self.waiting = [], deque()
        self._reset()

    # ---- what a runtime other than PyTorch replaces (serve/onnx_engine.py) ----
    def _prepare(self, job: Job) -> None:
        """Per-job state made when it is queued: a seeded generator for sampled replies."""
        if job.params.seed is not None and job.params.temperature > 0:
            job.gen = torch.Generator(device=self.device).manual_seed(job.params.seed)

    def _reset(self) -> None:
        """Forget every row of the shared KV cache (after a stop or a failed step)."""
        self.cache.reset()

    def _decode_context(self):
        return torch.inference_mode()

    def _run(self) -> None:
        with self._decode_context():
            while True:
                with self.cond:
                    while not self.stopping and not self.active and not self.waiting:
                        self.cond.wait()
                    if self.stopping:
                        return
                try:
                    self.step()
                except Exception as e:  # noqa: BLE001 - a bug must not kill the server: fail the jobs, go on
                    log.exception("decode step failed")
                    self._fail_all(f"generation failed: {type(e).__name__}: {e}")

    def step(self) -> None:
        """Drop cancelled rows, admit waiting jobs into free slots, decode one token for every row."""
        with torch.inference_mode():
            self._drop_cancelled()
            self._admit()
            if self.active:
                self._decode()

    def _drop_cancelled(self) -> None:
        gone = [i for i, j in enumerate(self.active) if j.cancelled]
        if gone:
            self.counters["cancelled"] += len(gone)
            self._remove(gone)

    def _remove(self, rows: list[int]) -> None:
        gone = set(rows)
        keep = [i for i in range(len(self.active)) if i not in gone]
        self.active = [self.active[i] for i in keep]
        self.cache.keep(keep)

    def _next_waiting(self) -> Job | None:
        with self.cond:
            while self.waiting:
                job = self.waiting.popleft()
                if not job.cancelled:
                    return job
                self.counters["cancelled"] += 1
        return None

    def _admit(self) -> None:
        """Fill free slots from the queue; prompts admitted together are prefilled together."""
        jobs = []
        while len(self.active) + len(jobs) < self.max_batch:
            job = self._next_waiting()
            if job is None:
                break
            jobs.append(job)
        for group in self._groups(jobs):
            self._prefill_group(group)

    def _groups(self, jobs: list[Job]):
        """Consecutive jobs whose padded prefill (rows x longest prompt) stays within `prefill_tokens`."""
        group, longest = [], 0
        for job in jobs:
            t = max(longest, len(job.ids))
            if group and t * (len(group) + 1) > self.prefill_tokens:
                yield group
                group, t = [], len(job.ids)
            group.append(job)
            longest = t
        if group:
            yield group

    def _prefill_group(self, jobs: list[Job]) -> None:
        try:
            firsts, rows = self._prefill(jobs)
        except Exception as e:  # noqa: BLE001 - one bad request must not take the others down
            if len(jobs) > 1:               # find the culprit: each job alone
                for job in jobs:
                    self._prefill_group([job])
                return
            log.exception("prefill failed")
            self.counters["errors"] += 1
            self._send(jobs[0], ("error", f"generation failed: {type(e).__name__}: {e}"))
            return
        for job, first, (ks, vs) in zip(jobs, firsts, rows):
            self.cache.add(ks, vs)
            self.active.append(job)
            if self._accept(job, first):
                self._remove([len(self.active) - 1])

    def _prefill(self, jobs: list[Job]):
        """Prompts left-padded into one batch, as generate_stream does; a job alone is exactly its
        computation (no padding, no mask). Returns first tokens and each row's keys/values."""
        ids, key_mask = left_pad([j.ids for j in jobs], self.model.cfg.pad_token_id)
        b, t = ids.shape
        ids, key_mask = ids.to(self.device), key_mask.to(self.device)
        padded = not bool(key_mask.all())
        position_ids = (key_mask.long().cumsum(-1) - 1).clamp(min=0) if padded else None
        pics = [j.pixels for j in jobs if j.pixels is not None]       # in row order, as splicing expects
        visual = self._visual_tokens(torch.cat(pics)) if pics else None
        one = KVCache(self.model.cfg, b, t, self.device, self.dtype)
        out = self.model(ids, visual_tokens=visual, position_ids=position_ids,
                         key_mask=key_mask if padded else None, cache=one, logits_to_keep=1, check=True)
        firsts = self._sample(jobs, out.logits[:, -1])
        rows = [([k[i:i + 1, :, t - len(j.ids):] for k in one.k], [v[i:i + 1, :, t - len(j.ids):] for v in one.v])
                for i, j in enumerate(jobs)]
        for j in jobs:
            j.pixels = None                                 # the images live in the cache now
        return firsts, rows

    def _visual_tokens(self, pixels: torch.Tensor) -> torch.Tensor | None:
        """(N, P, 3pp) pixels -> (N, L, H) visual tokens; the encoder runs (in one call) only for pictures
        that are not among the last `image_cache` ones."""
        if pixels.shape[0] == 0:
            return None
        keys = [hashlib.blake2b(p.cpu().contiguous().numpy().tobytes(), digest_size=16).hexdigest()
                for p in pixels]
        out = self.pictures.get(keys, lambda idx: self.model.encode_images(pixels[idx].to(self.device)))
        self.counters["images_encoded"], self.counters["images_cached"] = self.pictures.encoded, self.pictures.reused
        return out

    @property
    def visual(self):
        """The cached pictures' visual tokens, by pixel hash (least recently used first)."""
        return self.pictures.entries

    def _decode(self) -> None:
        c = self.cache
        c.reserve(1)
        starts = torch.tensor(c.starts, device=self.device)
        feed = torch.tensor([[j.last] for j in self.active], device=self.device)
        position_ids = (c.pos - starts)[:, None]
        key_mask = None
        if any(c.starts):             # rows of different lengths: hide the columns left of each row's start
            key_mask = torch.arange(c.pos + 1, device=self.device)[None, :] >= starts[:, None]
        out = self.model(feed, position_ids=position_ids, key_mask=key_mask, cache=c, logits_to_keep=1)
        self.counters["peak_batch"] = max(self.counters["peak_batch"], len(self.active))
        nxt = self._sample(self.active, out.logits[:, -1])
        self.counters["steps"] += 1
        done = [i for i, (job, t) in enumerate(zip(self.active, nxt)) if self._accept(job, int(t))]
        if done:
            self._remove(done)

    def _sample(self, jobs: list[Job], logits: torch.Tensor) -> list[int]:
        """Greedy rows in one argmax; sampled rows one by one with their own settings and generator."""
        out = logits.argmax(-1).tolist()
        for i, job in enumerate(jobs):
            if job.params.temperature > 0:
                out[i] = int(sample_next(logits[i:i + 1], job.params, job.gen)[0])
        return out

    def _accept(self, job: Job, token: int) -> bool:
        """Record one generated token; True when the job is finished."""
        job.last = token
        if token in job.params.stop_ids:
            return self._finish(job, "stop")
        job.n_out += 1
        self.counters["tokens"] += 1
        delta = job.text.push(token)
        if delta:
            self._send(job, ("delta", delta))
        if job.text.stopped:
            return self._finish(job, "stop")
        if job.n_out >= job.params.max_new_tokens:
            return self._finish(job, "length")
        return False

    def _finish(self, job: Job, reason: str) -> bool:
        rest = job.text.finish()          # '' after a stop: push already sent the cut text
        if rest:
            self._send(job, ("delta", rest))
        self._send(job, ("done", reason, len(job.ids), job.n_out))
        return True

    def _send(self, job: Job, event: tuple) -> None:
        if event[0] != "delta":
            job.finished = True
        try:
            job.emit(event)
        except Exception:  # noqa: BLE001 - a closed event loop (shutdown) must not stop the others
            job.cancelled = True

    def _fail_all(self, msg: str) -> None:
        self.counters["errors"] += len(self.active)
        for job in self.active:
            self._send(job, ("error", msg))
        self.active = []
        self._reset()
