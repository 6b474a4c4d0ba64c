"""On-disk cache of frozen-encoder outputs, keyed by image content hash.

Why: in both VLM stages the SigLIP2 encoder is frozen, so its output for a given picture never changes,
yet a plain loop recomputes it every epoch, a sizeable share of each step on a CPU (docs/perf.md). The
cache stores `last_hidden_state` (patches x width, e.g. 256 x 768) once per distinct image and reads it
back afterwards; the projector and the LLM then train exactly as before.

Layout (one folder per encoder, so features of different encoders never mix):

    ROOT/<fingerprint[:16]>/manifest.json          what the fingerprint covers (for humans)
    ROOT/<fingerprint[:16]>/<key[:2]>/<key>.safetensors   {"features": (P, D)} in the training dtype

`key` is the SHA-256 of the image file's bytes (data/parquet.py `image_key`), so the same picture in
two rows, two data files or two runs is encoded once. The fingerprint hashes the encoder's config, every
weight and buffer, the preprocessing (image size, patch size, mean/std) and the stored dtype: change any
of them and a new folder is used. Files are written to a temporary name and renamed, so a crash or two
DDP ranks writing the same key never leave a torn file.

Size: 256 x 768 features are 384 KiB per image in bf16 (768 KiB in fp32); the published VLM-SFT set's
~580k images would take ~220 GB in bf16, the pretrain set more. Use it where images repeat over epochs
or runs and the disk is cheaper than the encoder time.

    cache = EncoderCache("cache/enc", model, torch.bfloat16)
    feats = cache.features(model, batch.pixel_values, batch.image_keys)     # (N, P, D)
    out = model(batch.input_ids, labels=batch.labels, vision_features=feats, ...)
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file


def encoder_fingerprint(model, dtype: torch.dtype) -> str:
    """SHA-256 over everything that determines the cached features of `model.vision_encoder`."""
    enc = model.vision_encoder
    h = hashlib.sha256()
    v = enc.vcfg
    meta = {"class": type(enc.encoder).__name__, "config": enc.encoder.config.to_dict(),
            "image_size": v.image_size, "patch_size": v.patch_size, "image_mean": v.image_mean,
            "image_std": v.image_std, "dtype": str(dtype)}
    if (v.resize, v.resample) != ("square", "bilinear"):     # the original's pixels (hf/pixels.py)
        meta.update(resize=v.resize, resample=v.resample)
    h.update(json.dumps(meta, sort_keys=True, default=str).encode())
    for name, t in sorted(enc.state_dict().items()):
        h.update(name.encode())
        h.update(str(t.dtype).encode() + str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu").contiguous().view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


class EncoderCache:
    """Features of a frozen encoder, read from disk when known and computed (then stored) when not."""

    def __init__(self, root: str | Path, model, dtype: torch.dtype = torch.float32):
        if getattr(model, "vision_encoder", None) is None:
            raise ValueError("the encoder cache needs a model with a vision encoder")
        if model.vision_trainable:
            raise ValueError("the vision encoder is trained in this run (--unfreeze-vision): its outputs change "
                             "every step and cannot be cached; drop --encoder-cache or keep the encoder frozen")
        self.dtype = dtype
        self.fingerprint = encoder_fingerprint(model, dtype)
        self.dir = Path(root) / self.fingerprint[:16]
        self.dir.mkdir(parents=True, exist_ok=True)
        manifest = self.dir / "manifest.json"
        if not manifest.exists():
            v = model.vision_encoder.vcfg
            info = {"fingerprint": self.fingerprint, "dtype": str(dtype), "image_size": v.image_size,
                    "patch_size": v.patch_size, "encoder_path": v.path, "key": "sha256 of the image bytes"}
            _atomic_write_bytes(manifest, (json.dumps(info, indent=2) + "\n").encode())
        self.hits = 0
        self.misses = 0
        self.damaged = 0

    def path(self, key: str) -> Path:
        if not key or "/" in key or key.startswith("."):
            raise ValueError(f"bad cache key {key!r}")
        return self.dir / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        """The stored features, or None when absent or unreadable (a damaged file is then recomputed
        and rewritten, and counted in `self.damaged`)."""
        p = self.path(key)
        if not p.exists():
            return None
        try:
            return load_file(str(p))["features"]
        except Exception:  # noqa: BLE001 - safetensors raises several types for a damaged file
            self.damaged += 1
            return None

    def put(self, key: str, features: torch.Tensor) -> None:
        p = self.path(key)
        p.parent.mkdir(parents=True, exist_ok=True)
        tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
        save_file({"features": features.detach().to("cpu", self.dtype).contiguous()}, str(tmp))
        os.replace(tmp, p)

    def features(self, model, pixel_values: torch.Tensor, keys: list) -> torch.Tensor:
        """(N, P, D) encoder features for a batch's images, in order: cached ones from disk, the others
        encoded once (under no_grad, in the caller's autocast) and stored."""
        n = pixel_values.shape[0]
        if len(keys) != n or any(k is None for k in keys):
            raise ValueError(f"{n} images but {len(keys)} cache keys (some missing): the data set must set "
                             f"Sample.image_keys to use the encoder cache")
        found: dict[str, torch.Tensor] = {}
        first_missing: dict[str, int] = {}        # key -> index of its first image in the batch
        for i, k in enumerate(keys):
            if k in found or k in first_missing:
                continue
            f = self.get(k)
            if f is not None:
                found[k] = f
            else:
                first_missing[k] = i
        if found:                                 # the hits go to the device in one copy
            found = dict(zip(found, torch.stack(list(found.values())).to(pixel_values.device)))
        self.hits += sum(1 for k in keys if k in found)
        if first_missing:
            self.misses += len(first_missing)
            todo = list(first_missing.values())
            with torch.no_grad():
                enc = model.vision_encoder(pixel_values[todo]).to(self.dtype)
            for j, (k, _) in enumerate(first_missing.items()):
                self.put(k, enc[j])
                found[k] = enc[j]
        return torch.stack([found[k] for k in keys])

    def stats(self) -> dict:
        total = self.hits + self.misses
        return {"hits": self.hits, "misses": self.misses, "hit_rate": round(self.hits / total, 4) if total else None}


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)
