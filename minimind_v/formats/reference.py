"""The original MiniMind-V layout: its checkpoint files read into our model, and our model written back
as one.

An original checkpoint (`llm_768.pth`, `pretrain_vlm_768.pth`, `sft_vlm_768.pth`, `*_moe_*`) is a state dict
saved without the vision encoder, fp16 or fp32, `.pth`/`.bin` (read with `torch.load(weights_only=True)`) or
`.safetensors`. It carries no config: that comes from a preset, a config file (the original's field names,
or one of our config.json), or `<stem>_config.json` beside it, checked against the generation its projector
keys show (`generations.py`). The frozen encoder is never in it: it is a local SigLIP folder of its own.

Loading is strict: every tensor must be a parameter of the model and every parameter must come from the
file, with the right shape, or loading stops and names the keys (`CheckpointMismatch`). The only parameters
allowed to be absent: the tied lm_head, and, for an LLM-only checkpoint (no `vision_proj.*`), the projector,
which is then freshly initialised, and said so.

This module reads and writes files only; turning them into model folders is `convert_export.py` (`convert`).
"""
from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import torch

from ..config import ModelConfig, preset
from ..model.siglip import encoder_classes, encoder_patches
from ..model.vlm import MiniMindVLM
from .fields import original_config
from .folder import CheckpointMismatch, strict_load
from .generations import (PRESET_OF, check_matches, config_for, detect, encoder_folder_kind, generation_of, label,
                          processor_settings)
from .hf_folder import read_weights_file

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")   # DDP / torch.compile wrappers around a whole state dict


# ---------------------------------------------------------------- reading original checkpoints

def read_state_dict(path: str | Path, log=print) -> dict[str, torch.Tensor]:
    """An original checkpoint file -> {name: fp32 tensor}. `.pth`/`.bin` go through weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = readable(read_weights_file, path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "optimizer" in obj:
        log(f"{path.name} is a resume checkpoint; using its 'model' entry")
        obj = obj["model"]
        if isinstance(obj, dict):
            frozen = [k for k in obj if isinstance(k, str) and k.startswith(tuple(w + "vision_encoder." for w in ("",) + WRAPPER_PREFIXES))]
            if frozen:       # 0420 resume files carry the frozen encoder; it comes from its own folder here
                log(f"  {len(frozen)} vision_encoder.* tensors set aside (the frozen encoder; it is read from "
                    f"--vision-encoder DIR, the original's encoder folder)")
                dropped = set(frozen)
                obj = {k: v for k, v in obj.items() if k not in dropped}
    if not isinstance(obj, dict):
        raise ValueError(f"{path} holds a {type(obj).__name__}, not a state dict")
    bad = sorted(k for k, v in obj.items() if not isinstance(v, torch.Tensor))
    if bad:
        raise ValueError(f"{path} is not a plain state dict: non-tensor entries {bad[:8]}")
    for prefix in WRAPPER_PREFIXES:
        if obj and all(k.startswith(prefix) for k in obj):
            log(f"every key starts with {prefix!r} (a training wrapper); stripped")
            obj = {k[len(prefix):]: v for k, v in obj.items()}
    dtypes = sorted({str(v.dtype).replace("torch.", "") for v in obj.values() if v.is_floating_point()})
    if dtypes and dtypes != ["float32"]:
        log(f"{path.name}: {'/'.join(dtypes)} tensors, cast to float32")
    return {k: (v.float() if v.is_floating_point() else v) for k, v in obj.items()}


def readable(read, path):
    """Run a file reader, turning torch / pickle / safetensors failures (a truncated download, a file that is
    not a checkpoint, a pickle that weights_only refuses) into one clear ValueError."""
    try:
        return read(path)
    except (FileNotFoundError, ValueError):
        raise
    except Exception as e:  # noqa: BLE001 - torch.load and safetensors raise many types for bad files
        if Path(path).is_dir():
            files = sorted(f.name for f in Path(path).iterdir() if f.suffix in (".bin", ".safetensors"))
            path = f"{path} ({', '.join(files)})"
        raise ValueError(f"{path} cannot be read as a checkpoint (truncated, corrupt, or not a weights file): "
                         f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}") from None


def resolve_config(src: Path, preset_name: str | None, config: str | None, log=print,
                   generation: str | None = None) -> ModelConfig:
    """The model config for a bare checkpoint: --preset, --config, or `<stem>_config.json` beside it,
    checked against the generation its projector keys show (formats/generations.py)."""
    if preset_name and config:
        raise ValueError("give either --preset or --config, not both")
    if preset_name:
        cfg = preset(preset_name)
        check_matches(cfg, generation, str(src), f"--preset {preset_name}")
        return cfg
    if config is None:
        sibling = src.with_name(src.stem + "_config.json")
        if not sibling.exists():
            hint = (f"--preset {PRESET_OF[generation]}" if generation else
                    "--preset (minimind-3v-2603, minimind-3v-0420, or their -moe variants)")
            raise ValueError(f"{src.name} holds weights only: say which model it is with {hint} or --config FILE "
                             f"(original field names)")
        log(f"config from {sibling}")
        config = str(sibling)
    try:
        d = json.loads(Path(config).read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"--config {config} is not valid JSON: {e}") from None
    if "vision" in d:                       # one of our own config.json files
        cfg = ModelConfig.from_dict(d)
        check_matches(cfg, generation, str(src), str(config))
        return cfg
    return config_for(d, generation, str(src))


# ---------------------------------------------------------------- vision encoder

def encoder_vision(cfg: ModelConfig, encoder_dir: str | Path, bundle: bool, log=print) -> dict:
    """The vision block for a local encoder folder (SigLIP2 for March 2026, SigLIP v1 for 0420), checked
    against the model: class, width, patch count; pixels as its preprocessor_config.json says."""
    encoder_dir = Path(encoder_dir)
    kind = encoder_folder_kind(encoder_dir)
    if kind != cfg.vision.encoder_class:
        gen = generation_of(cfg)
        want = {"siglip2": "a Siglip2VisionModel (siglip2-base-p16-ve)",
                "siglip": "a SiglipVisionModel (siglip2-base-p32-256-ve)"}
        raise ValueError(f"--vision-encoder {encoder_dir} holds {want[kind]} but this "
                         f"{label(gen) + ' ' if gen else ''}model needs {want[cfg.vision.encoder_class]}")
    enc = encoder_classes(kind)[0].from_pretrained(str(encoder_dir))
    if enc.hidden_size != cfg.vision.hidden_size:
        raise ValueError(f"encoder {encoder_dir} is {enc.hidden_size} wide but the model's projector expects "
                         f"{cfg.vision.hidden_size} (image_hidden_size)")
    side = math.isqrt(cfg.image_token_len * cfg.merge)
    most = encoder_patches(enc, kind)
    if side * side > most or (kind == "siglip" and side * side != most):
        raise ValueError(f"the model needs {side * side} patches per picture; encoder {encoder_dir} takes {most}")
    pixels = processor_settings(encoder_dir)
    if not pixels:
        log(f"  {encoder_dir} has no preprocessor_config.json: {cfg.vision.resize} {cfg.vision.resample} pixels")
    return dict(cfg.vision.__dict__, **{**pixels, "path": "vision_encoder" if bundle else str(encoder_dir.resolve()),
                                        "siglip": None, "patch_size": enc.patch_size,
                                        "image_size": side * enc.patch_size})


def load_encoder_tensors(encoder_cfg, tensors: dict[str, torch.Tensor], source: str, kind: str = "siglip2"):
    """A Siglip2VisionModel (or SiglipVisionModel) with `tensors` (names in either transformers layout) loaded
    strictly."""
    from ..model.transformers_compat import EncoderWeightsMismatch, load_into
    try:
        return load_into(encoder_classes(kind)[1](encoder_cfg), tensors, f"{source} (vision_encoder.* tensors)")
    except EncoderWeightsMismatch as e:
        raise CheckpointMismatch(str(e)) from None


def sibling_encoder(src: Path) -> Path | None:
    """`<stem>_vision_encoder/` beside a checkpoint: where `write_reference` puts an encoder trained here."""
    sibling = src.with_name(src.stem + "_vision_encoder")
    return sibling if (sibling / "config.json").exists() else None


def load_checkpoint(src: str | Path, *, preset_name: str | None = None, config: str | None = None,
                    vision_encoder: str | None = None, vision: bool = True, seed: int = 0,
                    log=print) -> MiniMindVLM:
    """An original checkpoint file -> our model in memory, strictly (what `convert` writes as a folder, without
    the folder). Without an encoder folder (given, or `<stem>_vision_encoder/` beside it) the model is
    text-only; an LLM-only file gets a freshly initialised projector (from `seed`), with a warning."""
    src = Path(src)
    weights = read_state_dict(src, log)
    generation = detect(weights, str(src))
    cfg = resolve_config(src, preset_name, config, log, generation)
    if vision_encoder is None and sibling_encoder(src) is not None:
        vision_encoder = str(sibling_encoder(src))
    if vision_encoder and vision:
        cfg = cfg.replace(vision=encoder_vision(cfg, vision_encoder, False, log))
    else:
        cfg = cfg.replace(vision=dict(cfg.vision.__dict__, path=None, siglip=None))
    enc_keys = sorted(k for k in weights if k.startswith("vision_encoder."))
    if enc_keys:
        raise CheckpointMismatch(f"{src}: unexpected encoder tensors {enc_keys[:6]} (the encoder is loaded "
                                 f"from its own folder)")
    torch.manual_seed(seed)
    model = MiniMindVLM(cfg, vision=cfg.vision.path is not None)
    allow = set()
    if not any(k.startswith("vision_proj.") for k in weights):
        allow = {k for k in model.state_dict() if k.startswith("vision_proj.")}
        logging.getLogger("minimind_v").warning(f"{src} is LLM-only: the projector (vision_proj) is freshly "
                                                f"initialised (seed {seed}), not trained")
    strict_load(model, weights, allow, source=str(src))
    return model.eval()


# ---------------------------------------------------------------- writing the original layout

def write_reference(model: MiniMindVLM, dst: str | Path, dtype: torch.dtype = torch.float32, log=print,
                    source: str = "model") -> Path:
    """`model` -> the original's `.pth` state dict + `<stem>_config.json`.

    Both `model.embed_tokens.weight` and `lm_head.weight` are present (one shared tensor, as the original
    saves them); no `vision_encoder.*` keys. An encoder trained here (`model.vision_encoder` loaded and not
    from a separate folder) is written as a SigLIP2 folder `<stem>_vision_encoder/` beside it, since the
    original loads its encoder from a path.
    """
    dst, src = Path(dst), source
    cfg = model.cfg
    if cfg.visual_pos_embed:
        raise ValueError(f"{src} adds a learned place vector to each visual token (visual_pos_embed), which the "
                         "original MiniMind-V has no weight for; export it with `minimind-v export --to hf` instead")
    converted: dict[int, torch.Tensor] = {}
    sd = {}
    for k, v in model.state_dict(keep_vars=False).items():
        if k.startswith("vision_encoder."):
            continue
        key = v.data_ptr()                  # a tied lm_head shares the embedding: convert (and store) it once
        if key not in converted:
            converted[key] = v.detach().to("cpu", dtype).clone()
        sd[k] = converted[key]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(dst.name + ".tmp")
    torch.save(sd, str(tmp))
    tmp.replace(dst)
    ref = original_config(cfg)
    if cfg.merge != 4 or cfg.projector_norm:
        ref.update(merge=cfg.merge, projector_norm=cfg.projector_norm)
    cfg_file = dst.with_name(dst.stem + "_config.json")
    cfg_file.write_text(json.dumps(ref, indent=2) + "\n")
    log(f"{src} -> {dst}: {len(sd)} tensors ({str(dtype).replace('torch.', '')}), config in original field names "
        f"-> {cfg_file}")
    gen = generation_of(cfg)
    log(f"  layout: {label(gen) if gen else f'merge={cfg.merge}, projector_norm={cfg.projector_norm} (no upstream release)'}"
        f"; the original loads it with MiniMindVLM(VLMConfig(hidden_size={cfg.hidden_size}, num_hidden_layers="
        f"{cfg.num_hidden_layers}, use_moe={cfg.use_moe}), vision_model_path=ENCODER_DIR) and "
        f"load_state_dict(torch.load(...), strict=False): every key matches, and the only missing ones are its "
        f"vision_encoder.* (strict=True holds only when ENCODER_DIR is absent and the model has no encoder)")
    if model.vision_encoder is not None:
        enc_dir = dst.with_name(dst.stem + "_vision_encoder")
        model.vision_encoder.encoder.save_pretrained(str(enc_dir))
        log(f"  this model's encoder was trained here: written as a SigLIP2 folder {enc_dir}")
    elif cfg.vision.path is not None:
        log(f"  vision encoder not included (as in the original): {cfg.vision.path}")
    return dst
