"""`serve --runtime onnx`: the same OpenAI-compatible API and chat page over an ONNX folder (portable/runtime.py).

The simple path, chosen on purpose: requests are served one at a time, in arrival order, each generated to
its end by the runtime's own decode loop (`OnnxVLM.generate_stream`) while later ones wait in the queue (429
when it is full). The continuous batching of engine.py keeps one shared PyTorch KV cache whose rows it
shifts and drops in place; onnxruntime hands back a fresh cache each step, so batching here would need its
own cache bookkeeping for what is the small-device path. What the app sees is unchanged: the Job events
(`delta`, `done`, `error`), stop strings, cancellation when a client goes away, the visual-token cache.

`OnnxServed` gives the app the few things it reads from a `pipeline.VLM`: the name, the context and image
token count, the tokenizer, prompt ids, sampling parameters and the pictures (kept as PIL images until the
job runs; the runtime encodes them, reusing the visual tokens of recent pictures).
"""
from __future__ import annotations

import contextlib
import threading
from collections import deque
from types import SimpleNamespace

from ..config import SamplingParams
from ..portable.runtime import OnnxVLM
from .engine import Engine, Job


class OnnxServed:
    """An OnnxVLM as create_app reads a VLM."""

    def __init__(self, rt: OnnxVLM):
        self.rt, self.tok, self.name = rt, rt.tok, rt.name
        c = rt.cfg
        self.model = SimpleNamespace(cfg=SimpleNamespace(max_position_embeddings=c["max_context"],
                                                         image_token_len=c["image_token_len"]))

    def prompt_ids(self, messages, n_images):
        return self.rt.prompt_ids(messages, n_images)

    def params(self, **kw) -> SamplingParams:
        return self.rt.params(**{k: v for k, v in kw.items() if v is not None}, stop_ids=(self.tok.eos_id,))

    def pixels(self, images):
        return list(images) if images else None


class OnnxEngine(Engine):
    """One request at a time on onnxruntime; the queue, events and counters of Engine."""

    def __init__(self, served: OnnxServed, max_queue: int = 256, **_):
        self.served, self.rt, self.tok = served, served.rt, served.tok
        self.max_batch, self.max_queue = 1, max_queue
        self.waiting: deque[Job] = deque()
        self.active: list[Job] = []
        self.cond = threading.Condition()
        self.thread = None
        self.stopping = False
        self.counters = {"requests": 0, "tokens": 0, "steps": 0, "cancelled": 0, "errors": 0, "peak_batch": 0,
                         "images_encoded": 0, "images_cached": 0}

    def _prepare(self, job: Job) -> None:
        pass                              # the runtime seeds its own sampling from job.params.seed

    def _reset(self) -> None:
        pass                              # no shared cache: each request owns its own

    def _decode_context(self):
        return contextlib.nullcontext()

    def _remove(self, rows: list[int]) -> None:
        gone = set(rows)
        self.active = [j for i, j in enumerate(self.active) if i not in gone]

    def step(self) -> None:
        """Take the next waiting request and generate it to its end (or until its client leaves)."""
        job = self._next_waiting()
        if job is None:
            return
        self.active = [job]
        self.counters["peak_batch"] = max(self.counters["peak_batch"], 1)
        before = len(self.rt._visual)
        visual = self.rt.visual_tokens(job.pixels) if job.pixels else None
        if job.pixels:
            new = len(self.rt._visual) - before
            self.counters["images_encoded"] += max(new, 0)
            self.counters["images_cached"] += len(job.pixels) - max(new, 0)
        job.pixels = None
        for nxt in self.rt.generate_stream([job.ids], job.params, visual, job.params.stop_ids):
            if job.cancelled:
                self.counters["cancelled"] += 1
                break
            self.counters["steps"] += 1
            if self._accept(job, int(nxt[0])):
                break
        self.active = []
