"""The torch-free runtime: an ONNX folder (`minimind-v export --to onnx`) answering questions about pictures.

    from minimind_v.portable.runtime import OnnxVLM
    vlm = OnnxVLM.load("model-onnx")
    for piece in vlm.stream([{"role": "user", "content": "<image>\\nWhat colour is it?"}], images=[img]):
        print(piece, end="")

It imports numpy, onnxruntime, tokenizers and Pillow, and of this package only modules that import none
of torch either: the tokenizer wrapper, the ChatML rendering (data/chatml.py: the same token ids as the
PyTorch path, control-token strings in written text kept as text), the UTF-8-safe text stream and the one
picture module (hf/pixels.py, numpy + PIL). `import torch` is never reached (tests/test_onnx.py runs it
where importing torch raises).

Decoding mirrors model/generate.py: prompts of different lengths are left-padded, the attention mask hides
the padding and position ids count real tokens only; the first step runs the whole prompt with an empty
cache, every later step one token per row with the cache the last step returned. Greedy is argmax (the
same tokens as the PyTorch path, which tests check); sampling (temperature, top-k, top-p) uses numpy's
generator, so a seeded run repeats itself here but does not draw the PyTorch path's tokens.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Iterator

import numpy as np

from ..config import SamplingParams
from ..data.chatml import prompt_ids
from ..textstream import TextStream
from ..tokenizer import Tokenizer

FORMAT, VERSION, SETTINGS = "minimind-v-onnx", 1, "minimind_v_onnx.json"   # as onnx_export writes them


class RuntimeSetupError(ValueError):
    """An ONNX folder this runtime cannot use, or onnxruntime missing (one line for the CLI)."""


def _onnxruntime():
    try:
        import onnxruntime
    except ImportError:
        raise RuntimeSetupError("the ONNX runtime needs onnxruntime: pip install 'minimind-v[onnx]' "
                                "(or pip install onnxruntime)") from None
    return onnxruntime


def read_settings(folder: str | Path) -> dict:
    folder = Path(folder)
    f = folder / SETTINGS
    if not f.exists():
        raise RuntimeSetupError(f"{folder} is not an ONNX export (no {SETTINGS}); write one with "
                                f"`minimind-v export --model DIR --to onnx {folder}`")
    s = json.loads(f.read_text())
    if s.get("format") != FORMAT or s.get("version") != VERSION:
        raise RuntimeSetupError(f"{folder} was written by another version of the ONNX export (format "
                                f"{s.get('format')!r} version {s.get('version')!r}; this runtime reads {FORMAT} "
                                f"version {VERSION}): export the model again")
    return s


def sample_next(logits: np.ndarray, p: SamplingParams, rng: np.random.Generator) -> np.ndarray:
    """logits (B, V) -> next ids (B,): argmax when greedy, else temperature / top-k / top-p sampling."""
    if p.temperature <= 0:
        return logits.argmax(-1)
    x = logits.astype(np.float64) / p.temperature
    if p.top_k and p.top_k < x.shape[-1]:
        kth = np.sort(x, -1)[:, -p.top_k][:, None]
        x = np.where(x < kth, -np.inf, x)
    if p.top_p < 1.0:
        order = np.argsort(-x, -1, kind="stable")
        srt = np.take_along_axis(x, order, -1)
        probs = np.exp(srt - srt[:, :1])
        probs /= probs.sum(-1, keepdims=True)
        drop = np.cumsum(probs, -1) - probs > p.top_p            # keep the smallest set reaching top_p
        srt = np.where(drop, -np.inf, srt)
        x = np.full_like(x, -np.inf)
        np.put_along_axis(x, order, srt, -1)
    probs = np.exp(x - x.max(-1, keepdims=True))
    probs /= probs.sum(-1, keepdims=True)
    return np.array([rng.choice(probs.shape[-1], p=row) for row in probs])


def split_packed(packed: np.ndarray, resize: str):
    """Our packed pixels (N, P[+1], 3pp) -> (pixel values, attention mask, spatial shapes) as numpy."""
    if resize == "naflex":
        patches, info = packed[:, :-1], np.rint(packed[:, -1, :2]).astype(np.int64)
        mask = (np.arange(patches.shape[1])[None] < (info[:, 0] * info[:, 1])[:, None]).astype(np.int64)
        return np.ascontiguousarray(patches, dtype=np.float32), mask, info
    n, count, _ = packed.shape
    g = int(round(count ** 0.5))
    return (np.ascontiguousarray(packed, dtype=np.float32), np.ones((n, count), np.int64),
            np.tile(np.array([[g, g]], np.int64), (n, 1)))


class OnnxVLM:
    """An exported model: `stream`, `answer`, `generate` like pipeline.VLM, on onnxruntime."""

    VISUAL_CACHE = 16

    def __init__(self, folder: str | Path, threads: int | None = None):
        ort = _onnxruntime()
        self.folder = Path(folder)
        self.settings = s = read_settings(self.folder)
        self.name = self.folder.name
        self.cfg, self.pix = s["model"], s["pixels"]
        self.float = np.float16 if s["dtype"] == "fp16" else np.float32
        opts = ort.SessionOptions()
        threads = threads or int(os.environ.get("OMP_NUM_THREADS", "0") or 0)
        if threads:
            opts.intra_op_num_threads = threads
            opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        # threads that finished their share sleep instead of spinning, as the PyTorch side's OpenMP threads do
        # (cpu_pace.py: a spinning thread on a shared CPU slows every operation); OMP_WAIT_POLICY=ACTIVE spins
        spin = os.environ.get("OMP_WAIT_POLICY", "").upper() == "ACTIVE"
        opts.add_session_config_entry("session.intra_op.allow_spinning", "1" if spin else "0")

        def session(name):
            path = self.folder / name
            if not path.exists():
                raise RuntimeSetupError(f"{path} is missing: the ONNX folder is incomplete, export it again")
            return ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
        self.decoder = session(s["files"]["decoder"])
        self.vision = session(s["files"]["vision"]) if s["files"].get("vision") else None
        self.tok = Tokenizer.load(self.folder)
        self._visual: dict[str, np.ndarray] = {}

    @classmethod
    def load(cls, folder: str | Path, threads: int | None = None) -> "OnnxVLM":
        return cls(folder, threads)

    # ---- prompts and pictures
    def prompt_ids(self, messages: list[dict], n_images: int) -> list[int]:
        return prompt_ids(messages, n_images, self.tok, self.cfg["image_token_len"])

    def pixel_inputs(self, images) -> dict[str, np.ndarray]:
        """PIL pictures -> the vision graph's inputs, through the one picture module (hf/pixels.py)."""
        from ..hf import pixels
        out = pixels.encoder_inputs([pixels.to_rgb(im) for im in images], self.pix)
        if self.pix["encoder_class"] == "siglip2" and "spatial_shapes" not in out:     # square: the full grid
            n, count = out["pixel_values"].shape[:2]
            g = int(round(count ** 0.5))
            out["pixel_attention_mask"] = np.ones((n, count), np.int64)
            out["spatial_shapes"] = np.tile(np.array([[g, g]], np.int64), (n, 1))
        return out

    def encode(self, inputs: dict[str, np.ndarray]) -> np.ndarray:
        """Vision graph inputs -> visual tokens (N, L, hidden)."""
        if self.vision is None:
            raise ValueError("this ONNX folder has no vision graph (the model was exported text-only)")
        names = [i.name for i in self.vision.get_inputs()]
        feed = {k: (v.astype(self.float) if v.dtype.kind == "f" else v.astype(np.int64))
                for k, v in inputs.items() if k in names}
        return self.vision.run(["visual"], feed)[0]

    def encode_packed(self, packed: np.ndarray) -> np.ndarray:
        """Our packed pixel tensor (N, P[+1], 3pp), as the PyTorch path makes it -> visual tokens."""
        v, m, s = split_packed(np.asarray(packed), self.pix["resize"])
        return self.encode({"pixel_values": v, "pixel_attention_mask": m, "spatial_shapes": s})

    def visual_tokens(self, images) -> np.ndarray | None:
        """(n_images, L, hidden) for PIL pictures, encoding only those not seen lately (keyed by pixels)."""
        if not images:
            return None
        from ..hf.pixels import to_rgb
        rgb = [to_rgb(im) for im in images]
        keys = [hashlib.sha256(f"{im.size}".encode() + im.tobytes()).hexdigest() for im in rgb]
        rows = {k: self._visual[k] for k in keys if k in self._visual}
        first = {k: i for i, k in reversed(list(enumerate(keys))) if k not in rows}     # each new picture once
        if first:
            out = self.encode(self.pixel_inputs([rgb[i] for i in first.values()]))
            rows.update(zip(first, out))
        for k in keys:                                   # most recently used last; the oldest leave first
            self._visual.pop(k, None)
            self._visual[k] = rows[k]
        while len(self._visual) > self.VISUAL_CACHE:
            self._visual.pop(next(iter(self._visual)))
        return np.stack([rows[k] for k in keys])

    # ---- decoding
    def forward(self, ids, visual, mask, pos, past):
        """One decoder call: (logits (B, T, V), new cache list)."""
        feed = {"input_ids": ids.astype(np.int64), "visual": visual, "attention_mask": mask.astype(np.int64),
                "position_ids": pos.astype(np.int64)}
        for i in range(self.cfg["num_hidden_layers"]):
            feed[f"past_key_{i}"], feed[f"past_value_{i}"] = past[2 * i], past[2 * i + 1]
        out = self.decoder.run(None, feed)
        return out[0], out[1:]

    def empty_cache(self, b: int) -> list[np.ndarray]:
        c = self.cfg
        return [np.zeros((b, c["num_key_value_heads"], 0, c["head_dim"]), self.float)
                for _ in range(2 * c["num_hidden_layers"])]

    def generate_stream(self, prompts: list[list[int]], params: SamplingParams, visual: np.ndarray | None = None,
                        stop_ids: tuple = ()) -> Iterator[np.ndarray]:
        """Yield the next ids (B,) step by step; rows that finished keep yielding -1."""
        c = self.cfg
        b, t = len(prompts), max(len(p) for p in prompts)
        if t + params.max_new_tokens > c["max_context"]:
            raise ValueError(f"{t} prompt + {params.max_new_tokens} new tokens exceed the export's context of "
                             f"{c['max_context']} tokens")
        ids = np.full((b, t), c["pad_token_id"], np.int64)
        mask = np.zeros((b, t), np.int64)
        for i, p in enumerate(prompts):
            ids[i, t - len(p):] = p
            mask[i, t - len(p):] = 1
        n_img = int((ids == c["image_token_id"]).sum())
        given = 0 if visual is None else visual.shape[0] * visual.shape[1]
        if n_img != given:
            raise ValueError(f"{n_img} image-token positions but {given // max(c['image_token_len'], 1)} image(s) "
                             f"x {c['image_token_len']} tokens were given")
        if visual is None:
            visual = np.zeros((1, c["image_token_len"], c["hidden_size"]), self.float)
        visual = visual.astype(self.float)
        pos = np.clip(np.cumsum(mask, -1) - 1, 0, None)
        logits, past = self.forward(ids, visual, mask, pos, self.empty_cache(b))
        lengths = mask.sum(-1)
        none = np.zeros((1, c["image_token_len"], c["hidden_size"]), self.float)
        rng = np.random.default_rng(params.seed)
        done = np.zeros(b, bool)
        stop = np.array(list(stop_ids) or [-2])
        for step in range(params.max_new_tokens):
            nxt = sample_next(logits[:, -1].astype(np.float32), params, rng)
            nxt = np.where(done, -1, nxt)
            yield nxt
            done |= np.isin(nxt, stop)
            if done.all() or step == params.max_new_tokens - 1:
                return
            mask = np.concatenate([mask, np.ones((b, 1), np.int64)], 1)
            feed = np.clip(nxt, 0, None)[:, None]
            logits, past = self.forward(feed, none, mask, (lengths + step)[:, None], past)

    def params(self, **kw) -> SamplingParams:
        return SamplingParams(**{k: v for k, v in kw.items() if k in SamplingParams.__dataclass_fields__})

    def generate(self, prompts: list[list[int]], params: SamplingParams, visual=None) -> list[list[int]]:
        """All generated ids per prompt (stop token excluded)."""
        outs, finished = [[] for _ in prompts], [False] * len(prompts)
        stop = (self.tok.eos_id,)
        for nxt in self.generate_stream(prompts, params, visual, stop):
            for i, v in enumerate(nxt.tolist()):
                if finished[i] or v < 0:
                    continue
                if v in stop:
                    finished[i] = True
                else:
                    outs[i].append(v)
        return outs

    def stream(self, messages: list[dict], images=None, **sampling) -> Iterator[str]:
        """Yield text pieces as they are generated (whole UTF-8 characters only)."""
        ids = self.prompt_ids(messages, len(images or []))
        text = TextStream(self.tok)
        for nxt in self.generate_stream([ids], self.params(**sampling), self.visual_tokens(images),
                                        (self.tok.eos_id,)):
            v = int(nxt[0])
            if v < 0 or v == self.tok.eos_id:
                break
            piece = text.push(v)
            if piece:
                yield piece
        rest = text.finish()
        if rest:
            yield rest

    def answer(self, prompt: str, images=None, **sampling) -> str:
        return "".join(self.stream([{"role": "user", "content": prompt}], images, **sampling))

    def answer_batch(self, conversations: list[list[dict]], images: list[list], **sampling) -> list[str]:
        prompts = [self.prompt_ids(c, len(im)) for c, im in zip(conversations, images)]
        flat = [im for ims in images for im in ims]
        outs = self.generate(prompts, self.params(**sampling), self.visual_tokens(flat))
        return [self.tok.decode(o) for o in outs]
