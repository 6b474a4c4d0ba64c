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

import logging
import threading
from collections import deque
from types import SimpleNamespace

from ..config import SamplingParams
from ..portable.runtime import OnnxVLM
from ..textstream import TextStream
from .engine import Engine, Job

log = logging.getLogger("minimind_v.serve")


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

    def submit(self, job: Job) -> None:
        from .engine import QueueFull
        with self.cond:
            if len(self.waiting) >= self.max_queue:
                raise QueueFull(f"{len(self.waiting)} requests are already waiting")
            job.text = TextStream(self.tok, job.stop)
            self.waiting.append(job)
            self.counters["requests"] += 1
            self.cond.notify()

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

    def _run(self) -> None:
        while True:
            with self.cond:
                while not self.stopping and not self.waiting:
                    self.cond.wait()
                if self.stopping:
                    return
            try:
                self.step()
            except Exception as e:  # noqa: BLE001 - a bug must not kill the server: fail the job, go on
                log.exception("generation failed")
                self._fail_all(f"generation failed: {type(e).__name__}: {e}")

    def _remove(self, rows: list[int]) -> None:
        gone = set(rows)
        self.active = [j for i, j in enumerate(self.active) if i not in gone]

    def _fail_all(self, msg: str) -> None:
        self.counters["errors"] += len(self.active)
        for job in self.active:
            self._send(job, ("error", msg))
        self.active = []

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
