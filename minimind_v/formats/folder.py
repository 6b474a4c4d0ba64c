"""Model folders: save and load a self-contained model, strictly.

    DIR/config.json          our ModelConfig (original field names + a `vision` block)
    DIR/model.safetensors    LLM + projector (+ the encoder when it was trained here); lm_head stored once
    DIR/tokenizer.json, tokenizer_config.json
    DIR/vision_encoder/      a bundled SigLIP2 folder, when the encoder is a frozen pretrained one and was
                             bundled; otherwise config.vision.path points at the user's folder

Loading is strict: every key in the file must be a parameter of the model and every parameter must be
in the file, except the ones listed as allowed to be absent (the tied lm_head, and a pretrained encoder
that is loaded from its own folder). Anything else raises `CheckpointMismatch` naming the keys.

`strict_load` is shared by every format (hf.py, reference.py import it from here), so this module imports no
other format: the dependency runs one way, and `load.py` is the one place that tells the formats apart.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import ModelConfig
from ..model.transformers_compat import flat_encoder_names
from ..model.vlm import MiniMindVLM

WEIGHTS = "model.safetensors"
FRESH_MARKER = "projector"          # config.json key; value "fresh" = projector not trained yet


class CheckpointMismatch(ValueError):
    pass


def absent_ok(model: MiniMindVLM) -> set[str]:
    """Keys a weight file may lack: the tied lm_head, and an encoder loaded from its own folder."""
    ok = set()
    if model.cfg.tie_word_embeddings:
        ok.add("lm_head.weight")
    if model.cfg.vision.path is not None:
        ok |= {k for k in model.state_dict() if k.startswith("vision_encoder.")}
    return ok


def strict_load(model: MiniMindVLM, sd: dict, allow_missing: set[str] | None = None, source: str = "checkpoint"):
    """Load `sd` into `model`, refusing missing, unexpected or mis-shaped keys (named in the error) and
    tensors that hold NaN or infinite values."""
    own = model.state_dict()
    sd = flat_encoder_names(sd)          # a file written under transformers 4 before the names were fixed
    allow = absent_ok(model) | (allow_missing or set())
    if model.cfg.tie_word_embeddings and "lm_head.weight" in sd and "model.embed_tokens.weight" in sd:
        if not torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"]):
            raise CheckpointMismatch(f"{source}: lm_head.weight differs from model.embed_tokens.weight but the "
                                     f"config ties them (tie_word_embeddings=true)")
        sd = {k: v for k, v in sd.items() if k != "lm_head.weight"}
    missing = sorted(k for k in own if k not in sd and k not in allow)
    unexpected = sorted(k for k in sd if k not in own)
    shapes = sorted(f"{k}: file {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
                    for k in sd if k in own and sd[k].shape != own[k].shape)
    if missing or unexpected or shapes:
        lines = [f"{source} does not match the model config:"]
        for title, items in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if items:
                shown = ", ".join(items[:12]) + (f" ... (+{len(items) - 12} more)" if len(items) > 12 else "")
                lines.append(f"  {title} ({len(items)}): {shown}")
        raise CheckpointMismatch("\n".join(lines))
    bad = [k for k, v in sd.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:         # a diverged run's weights: every later forward would be NaN, so refuse them here
        raise CheckpointMismatch(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values ({', '.join(bad[:6])})"
                                 f"; these weights are unusable (a diverged run?)")
    with torch.no_grad():
        for k, v in sd.items():
            own[k].copy_(v.to(own[k].dtype))
    return model


def save_model(model: MiniMindVLM, out: str | Path, tokenizer=None, bundle_encoder: bool = False) -> Path:
    """Write a model folder. A trained-from-scratch encoder goes into model.safetensors; a pretrained
    one stays a pointer to its folder unless `bundle_encoder` copies it into DIR/vision_encoder. A
    pretrained encoder that was trained further (unfrozen) is always copied: a pointer would lose it."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg = model.cfg
    sd = model.state_dict()
    skip = {"lm_head.weight"} if cfg.tie_word_embeddings else set()
    vcfg = cfg.vision
    if vcfg.path is not None:
        skip |= {k for k in sd if k.startswith("vision_encoder.")}
        if (bundle_encoder or model.vision_trainable) and model.vision_encoder is not None:
            dst = out / "vision_encoder"
            model.vision_encoder.encoder.save_pretrained(str(dst))
            cfg = cfg.replace(vision=dict(vcfg.__dict__, path="vision_encoder"))
        elif not Path(vcfg.path).is_absolute() and model.vision_base is not None:
            src = (Path(model.vision_base) / vcfg.path).resolve()
            if src != (out / vcfg.path).resolve():
                cfg = cfg.replace(vision=dict(vcfg.__dict__, path=str(src)))
    tensors = {k: v.detach().to("cpu").contiguous() for k, v in sd.items() if k not in skip}
    tmp = out / (WEIGHTS + ".tmp")
    save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "minimind-v"})
    tmp.replace(out / WEIGHTS)
    cfg.save(out / "config.json")
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def projector_is_fresh(raw: dict) -> bool:
    """config.json written by `convert` for an LLM-only checkpoint: the projector is not trained yet."""
    return raw.get(FRESH_MARKER) == "fresh"


def read_config(folder: Path) -> dict:
    """DIR/config.json as a dict, or a one-line error naming the file (not a JSON traceback)."""
    f = folder / "config.json"
    try:
        raw = json.loads(f.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{f} is not valid JSON: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{f} holds a {type(raw).__name__}, not a JSON object")
    return raw


def load_folder(folder: str | Path, device: str | torch.device = "cpu", dtype: torch.dtype = torch.float32,
                vision: bool = True) -> MiniMindVLM:
    """Build the model from DIR/config.json (ours) and load DIR/model.safetensors strictly. `load.load_model`
    is the entry point that also takes Hugging Face folders and original checkpoints."""
    folder = Path(folder)
    if not (folder / "config.json").exists():
        raise FileNotFoundError(f"{folder} is not a model folder (no config.json)")
    raw = read_config(folder)
    try:
        cfg = ModelConfig.from_dict(raw)
    except (TypeError, AttributeError, ZeroDivisionError) as e:     # a field of the wrong type or value
        raise ValueError(f"{folder / 'config.json'} is not a usable model config: {e}") from None
    if vision and cfg.vision.path is None and cfg.vision.siglip is None:
        logging.getLogger("minimind_v").warning(f"{folder} has no vision encoder (converted without "
                                                f"--vision-encoder): loaded text-only")
        vision = False
    if projector_is_fresh(raw):
        logging.getLogger("minimind_v").warning(f"{folder}: the projector (vision_proj) is freshly initialised, "
                                                f"not trained; run the vlm-pretrain stage before relying on images")
    model = MiniMindVLM(cfg, vision=vision, base_dir=folder)
    model.vision_base = str(folder)
    weights = folder / WEIGHTS
    if not weights.exists():
        raise FileNotFoundError(f"{folder} has no {WEIGHTS}")
    from .generations import upgrade_norm_keys
    try:
        sd = load_file(str(weights))
    except Exception as e:  # noqa: BLE001 - safetensors raises its own error type for a damaged file
        raise ValueError(f"{weights} cannot be read (truncated or not a safetensors file): "
                         f"{type(e).__name__}: {e}") from None
    sd = upgrade_norm_keys(sd, cfg, logging.getLogger("minimind_v").info)
    allow = {k for k in model.state_dict() if k.startswith("vision_encoder.")} if not vision else set()
    sd = {k: v for k, v in sd.items() if vision or not k.startswith("vision_encoder.")}
    strict_load(model, sd, allow, source=str(weights))
    if model.vision_encoder is not None and cfg.vision.path is not None:    # read by transformers from its folder
        check_finite(model.vision_encoder, f"the vision encoder {cfg.vision.path}")
    return model.to(device=device, dtype=dtype).eval()


def check_finite(module: torch.nn.Module, source: str) -> None:
    """Refuse weights (here: an encoder folder transformers loaded) that hold NaN or infinite values."""
    bad = [n for n, t in module.state_dict().items() if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise CheckpointMismatch(f"{source}: {len(bad)} tensor(s) hold NaN or infinite values "
                                 f"({', '.join(bad[:6])}); these weights are unusable")
