"""Bring your own weights: original MiniMind-V checkpoints in, original / Hugging Face layouts out.

    minimind-v convert SRC DST [--preset P | --config FILE] [--tokenizer DIR] [--vision-encoder DIR [--bundle-encoder]]
    minimind-v convert FOLDER OUT.pth --to reference         our folder -> the original's .pth layout
    minimind-v export --model FOLDER --to hf OUT             a folder plain `transformers` loads

SRC may be
  * an original checkpoint file (`llm_768.pth`, `pretrain_vlm_768.pth`, `sft_vlm_768.pth`, `*_moe_*`): a
    state dict saved without the vision encoder, fp16 or fp32, `.pth`/`.bin` (read with
    `torch.load(weights_only=True)`) or `.safetensors`. Its config comes from `--preset`, `--config` (a
    JSON file in the original's field names, or one of our config.json), or `<stem>_config.json` next to it;
  * a Hugging Face folder (`model_type: minimind-v`): one exported here, or the original's converted one;
  * one of our model folders (to attach or bundle an encoder, or to change the layout with `--to`).

Loading is strict: every tensor of SRC must be a parameter of the model and every parameter must come from
SRC, with the right shape, or the conversion stops and names the keys (`CheckpointMismatch`). The only
parameters allowed to be absent: the tied lm_head, and, for an LLM-only checkpoint (no `vision_proj.*`,
like `llm_768.pth`), the projector, which is then freshly initialised; the folder is marked so, and
loading it says so until `vlm-pretrain` has written a trained one. The frozen SigLIP2 encoder is never in
an original checkpoint: `--vision-encoder DIR` points at a local SigLIP2 folder (or copies it into the
output with `--bundle-encoder`); without it the folder is text-only and says so.
"""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import torch

from .config import ModelConfig, preset
from .hf.export import export_hf, is_hf_folder, read_hf_folder, read_weights_file
from .hf.fields import default_vision, model_config_from_original, original_config
from .model.folder import FRESH_MARKER, CheckpointMismatch, load_model, projector_is_fresh, save_model, strict_load
from .model.vlm import MiniMindVLM
from .tokenizer import Tokenizer

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".bin", ".safetensors")
WRAPPER_PREFIXES = ("module.", "_orig_mod.")   # DDP / torch.compile wrappers around a whole state dict


# ---------------------------------------------------------------- reading original checkpoints

def read_state_dict(path: str | Path, log=print) -> dict[str, torch.Tensor]:
    """An original checkpoint file -> {name: fp32 tensor}. `.pth`/`.bin` go through weights_only=True."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    obj = read_weights_file(path)
    if isinstance(obj, dict) and isinstance(obj.get("model"), dict) and "optimizer" in obj:
        log(f"{path.name} is a resume checkpoint; using its 'model' entry")
        obj = obj["model"]
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


def resolve_config(src: Path, preset_name: str | None, config: str | None, log=print) -> ModelConfig:
    """The model config for a bare checkpoint: --preset, --config, or `<stem>_config.json` beside it."""
    if preset_name and config:
        raise ValueError("give either --preset or --config, not both")
    if preset_name:
        return preset(preset_name)
    if config is None:
        sibling = src.with_name(src.stem + "_config.json")
        if not sibling.exists():
            raise ValueError(f"{src.name} holds weights only: say which model it is with --preset "
                             f"(minimind-3v, minimind-3v-moe) or --config FILE (original field names)")
        log(f"config from {sibling}")
        config = str(sibling)
    d = json.loads(Path(config).read_text())
    if "vision" in d:                       # one of our own config.json files
        return ModelConfig.from_dict(d)
    return model_config_from_original(d)


# ---------------------------------------------------------------- vision encoder

def encoder_vision(cfg: ModelConfig, encoder_dir: str | Path, bundle: bool) -> dict:
    """The vision block for a SigLIP2 folder, checked against the checkpoint's projector input width."""
    from transformers import Siglip2VisionConfig
    encoder_dir = Path(encoder_dir)
    if not (encoder_dir / "config.json").exists():
        raise FileNotFoundError(f"--vision-encoder {encoder_dir} has no config.json (expected a local SigLIP2 "
                                f"folder such as siglip2-base-p16-ve)")
    enc = Siglip2VisionConfig.from_pretrained(str(encoder_dir))
    if enc.hidden_size != cfg.vision.hidden_size:
        raise ValueError(f"encoder {encoder_dir} is {enc.hidden_size} wide but the model's projector expects "
                         f"{cfg.vision.hidden_size} (image_hidden_size)")
    side = math.isqrt(cfg.image_token_len * cfg.merge)
    if side * side > enc.num_patches:
        raise ValueError(f"the model needs {side * side} patches per picture; encoder {encoder_dir} allows "
                         f"{enc.num_patches}")
    return dict(cfg.vision.__dict__, path="vision_encoder" if bundle else str(encoder_dir.resolve()), siglip=None,
                patch_size=enc.patch_size, image_size=side * enc.patch_size)


def load_encoder_tensors(encoder_cfg, tensors: dict[str, torch.Tensor], source: str):
    """A Siglip2VisionModel with `tensors` (its own names) loaded strictly."""
    from transformers import Siglip2VisionModel
    enc = Siglip2VisionModel(encoder_cfg)
    own = enc.state_dict()
    missing = sorted(set(own) - set(tensors))
    unexpected = sorted(set(tensors) - set(own))
    shapes = sorted(f"{k}: file {tuple(v.shape)} vs encoder {tuple(own[k].shape)}"
                    for k, v in tensors.items() if k in own and v.shape != own[k].shape)
    if missing or unexpected or shapes:
        raise CheckpointMismatch(f"{source}: vision_encoder.* tensors do not fit the encoder config: "
                                 f"missing {missing[:8]}, unexpected {unexpected[:8]}, wrong shape {shapes[:8]}")
    enc.load_state_dict(tensors, strict=True)
    return enc


# ---------------------------------------------------------------- writing our folder

def _check_tokenizer(tok: Tokenizer, cfg: ModelConfig) -> None:
    if tok.vocab_size > cfg.vocab_size:
        raise ValueError(f"tokenizer has {tok.vocab_size} tokens but the model only {cfg.vocab_size} embeddings")
    if tok.image_id != cfg.image_token_id:
        raise ValueError(f"tokenizer's <|image_pad|> is id {tok.image_id} but the model uses {cfg.image_token_id}")


def write_folder(model: MiniMindVLM, dst: Path, tokenizer: Tokenizer | None, *, encoder_dir=None, encoder=None,
                 fresh_projector: bool = False) -> Path:
    """Save `model` (LLM + projector) as our folder; the encoder is copied from `encoder_dir` or written
    from the in-memory `encoder` into DST/vision_encoder when the config points there."""
    dst.mkdir(parents=True, exist_ok=True)
    vpath = model.cfg.vision.path
    if vpath == "vision_encoder":
        target = dst / "vision_encoder"
        if encoder is not None:
            encoder.save_pretrained(str(target))
        elif encoder_dir is None:
            raise ValueError("the config points at DST/vision_encoder but no encoder was given (--vision-encoder)")
        elif Path(encoder_dir).resolve() != target.resolve():
            shutil.copytree(encoder_dir, target, dirs_exist_ok=True)
    model.vision_base = str(dst)
    save_model(model, dst, tokenizer)
    if fresh_projector:
        raw = json.loads((dst / "config.json").read_text())
        raw[FRESH_MARKER] = "fresh"
        (dst / "config.json").write_text(json.dumps(raw, indent=2) + "\n")
    return dst


def convert_weights(weights: dict[str, torch.Tensor], cfg: ModelConfig, dst: str | Path, *, source: str,
                    tokenizer: str | Tokenizer | None = None, encoder_dir=None, encoder=None, seed: int = 0,
                    fresh_projector: bool | None = None, log=print) -> Path:
    """LLM + projector tensors (original names) + a config -> our folder, strictly; then reload to verify.

    Without `vision_proj.*` tensors (an LLM-only checkpoint) the projector is freshly initialised and the
    folder marked so; `fresh_projector=True` keeps that mark on a projector that is still untrained."""
    dst = Path(dst)
    enc_keys = sorted(k for k in weights if k.startswith("vision_encoder."))
    if enc_keys:
        raise CheckpointMismatch(f"{source}: unexpected encoder tensors {enc_keys[:6]} (the encoder is loaded "
                                 f"from its own folder: --vision-encoder)")
    llm_only = not any(k.startswith("vision_proj.") for k in weights)
    fresh = llm_only or bool(fresh_projector)
    torch.manual_seed(seed)
    model = MiniMindVLM(cfg, vision=False)
    allow = {k for k in model.state_dict() if k.startswith("vision_proj.")} if llm_only else set()
    strict_load(model, weights, allow, source=source)
    tok = Tokenizer.load(tokenizer) if isinstance(tokenizer, (str, Path)) else tokenizer
    if tok is not None:
        _check_tokenizer(tok, cfg)
    write_folder(model, dst, tok, encoder_dir=encoder_dir, encoder=encoder, fresh_projector=fresh)
    counts = parameter_counts(model)
    log(f"{source}: {len(weights)} tensors, all accounted for -> {dst}")
    log(f"  {describe(cfg)}; LLM {counts['llm']:,} + projector {counts['projector']:,} parameters"
        + (f" ({counts['active']:,} active per token)" if cfg.use_moe else ""))
    if llm_only:
        log(f"  LLM-only checkpoint: the projector (vision_proj) is freshly initialised (seed {seed})")
    if fresh:
        log(f"  the projector is untrained: train it first with "
            f"`minimind-v train --stage vlm-pretrain --from {dst} ...`")
    if cfg.vision.path is None:
        log("  no vision encoder: the folder is text-only until you convert with --vision-encoder DIR")
    else:
        log(f"  vision encoder: {dst / cfg.vision.path if cfg.vision.path == 'vision_encoder' else cfg.vision.path}")
    if tok is None:
        log("  no tokenizer bundled: pass --tokenizer DIR (chat and train read it from the folder)")
    verify = load_model(dst, vision=cfg.vision.path is not None)
    log(f"  verified: {dst} loads strictly ({sum(1 for _ in verify.state_dict())} tensors)")
    return dst


def convert_checkpoint(src: str | Path, dst: str | Path, *, preset_name: str | None = None, config: str | None = None,
                       tokenizer: str | None = None, vision_encoder: str | None = None, bundle_encoder: bool = False,
                       seed: int = 0, log=print) -> Path:
    """An original `.pth`/`.safetensors` checkpoint -> our model folder (see the module docstring)."""
    src = Path(src)
    weights = read_state_dict(src, log)
    cfg = resolve_config(src, preset_name, config, log)
    sibling = src.with_name(src.stem + "_vision_encoder")
    if vision_encoder is None and (sibling / "config.json").exists():
        log(f"vision encoder from {sibling} (written there by --to reference)")
        vision_encoder = str(sibling)
    if vision_encoder:
        cfg = cfg.replace(vision=encoder_vision(cfg, vision_encoder, bundle_encoder))
    else:
        cfg = cfg.replace(vision=default_vision({"merge": cfg.merge, "image_token_len": cfg.image_token_len,
                                                 "image_hidden_size": cfg.vision.hidden_size}))
    return convert_weights(weights, cfg, dst, source=str(src), tokenizer=tokenizer, encoder_dir=vision_encoder,
                           seed=seed, log=log)


def convert_hf_folder(src: str | Path, dst: str | Path, *, tokenizer: str | None = None,
                      vision_encoder: str | None = None, bundle_encoder: bool = False, seed: int = 0,
                      log=print) -> Path:
    """A Hugging Face MiniMind-V folder (exported here, or the original's) -> our model folder."""
    from transformers import Siglip2VisionConfig
    src = Path(src)
    hf = read_hf_folder(src)
    cfg, encoder, encoder_dir = hf.cfg, None, None
    if hf.encoder:      # encoder weights inside: rebuild it, strictly, as DST/vision_encoder
        if vision_encoder:
            enc_cfg = Siglip2VisionConfig.from_pretrained(str(vision_encoder))
        elif cfg.vision.siglip is not None:
            enc_cfg = Siglip2VisionConfig(**cfg.vision.siglip)
        else:
            raise ValueError(f"{src} holds {len(hf.encoder)} vision_encoder.* tensors but no vision_config; give "
                             f"--vision-encoder DIR (the SigLIP2 folder whose config they fit)")
        encoder = load_encoder_tensors(enc_cfg, hf.encoder, str(src))
        log(f"{src}: {len(hf.encoder)} encoder tensors -> {Path(dst) / 'vision_encoder'}")
        cfg = cfg.replace(vision=dict(cfg.vision.__dict__, path="vision_encoder", siglip=None,
                                      patch_size=enc_cfg.patch_size, hidden_size=enc_cfg.hidden_size))
    elif vision_encoder:
        cfg = cfg.replace(vision=encoder_vision(cfg, vision_encoder, bundle_encoder))
        encoder_dir = vision_encoder
    if tokenizer is None and (src / "tokenizer.json").exists():
        tokenizer = str(src)
    return convert_weights(hf.weights, cfg, dst, source=str(src), tokenizer=tokenizer, encoder_dir=encoder_dir,
                           encoder=encoder, seed=seed, log=log)


def reattach_encoder(src: str | Path, dst: str | Path, vision_encoder: str, bundle_encoder: bool = False,
                     tokenizer: str | None = None, log=print) -> Path:
    """One of our folders (e.g. converted without an encoder) -> a copy that uses `vision_encoder`.
    A projector still marked fresh (LLM-only origin) is kept, and so is its mark."""
    src = Path(src)
    model = load_model(src, vision=False)
    fresh = projector_is_fresh(json.loads((src / "config.json").read_text()))
    cfg = model.cfg.replace(vision=encoder_vision(model.cfg, vision_encoder, bundle_encoder))
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or not cfg.tie_word_embeddings}
    tok = tokenizer or (str(src) if (src / "tokenizer.json").exists() else None)
    return convert_weights(sd, cfg, dst, source=str(src), tokenizer=tok, encoder_dir=vision_encoder,
                           fresh_projector=fresh, log=log)


# ---------------------------------------------------------------- writing the original layout

def to_reference(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float32, log=print) -> Path:
    """Our folder (or an exported HF folder) -> the original's `.pth` state dict + `<stem>_config.json`.

    Both `model.embed_tokens.weight` and `lm_head.weight` are present (one shared tensor, as the original
    saves them); no `vision_encoder.*` keys. An encoder trained here (not a separate folder) is written
    as a SigLIP2 folder `<stem>_vision_encoder/` beside it, since the original loads its encoder from a path.
    """
    src, dst = Path(src), Path(dst)
    model = load_model(src, vision=False)
    if model.cfg.vision.siglip is not None and model.cfg.vision.path is None:
        model = load_model(src, vision=True)
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
    log(f"  the original loads it with MiniMindVLM(VLMConfig(hidden_size={cfg.hidden_size}, num_hidden_layers="
        f"{cfg.num_hidden_layers}, use_moe={cfg.use_moe})) and load_state_dict(torch.load(...), strict=True)")
    if model.vision_encoder is not None:
        enc_dir = dst.with_name(dst.stem + "_vision_encoder")
        model.vision_encoder.encoder.save_pretrained(str(enc_dir))
        log(f"  this model's encoder was trained here: written as a SigLIP2 folder {enc_dir}")
    elif cfg.vision.path is not None:
        log(f"  vision encoder not included (as in the original): {cfg.vision.path}")
    return dst


def export(src: str | Path, dst: str | Path, to: str = "hf", dtype: torch.dtype = torch.float32, log=print) -> Path:
    """`minimind-v export`: our folder -> a transformers folder (`hf`) or the original layout (`reference`)."""
    if to == "reference":
        return to_reference(src, dst, dtype, log)
    if to != "hf":
        raise ValueError(f"unknown export format {to!r}: use hf or reference")
    src = Path(src)
    model = load_model(src, vision=True)
    tok = Tokenizer.load(src) if (src / "tokenizer.json").exists() else None
    return export_hf(model, dst, tok, dtype, log, source=src)


# ---------------------------------------------------------------- helpers

def describe(cfg: ModelConfig) -> str:
    moe = f", MoE {cfg.num_experts}x top-{cfg.num_experts_per_tok}" if cfg.use_moe else ""
    return (f"hidden {cfg.hidden_size}, {cfg.num_hidden_layers} layers, {cfg.num_attention_heads}/"
            f"{cfg.num_key_value_heads} heads{moe}, vocab {cfg.vocab_size}")


def parameter_counts(model: MiniMindVLM) -> dict[str, int]:
    """Unique parameters (tied embedding once): LLM, projector, both, MoE-active per token, encoder."""
    llm_proj = model.num_parameters()
    proj = sum(p.numel() for p in model.vision_proj.parameters())
    cfg = model.cfg
    active = llm_proj
    if cfg.use_moe:       # only k of E experts run per token: subtract the other E - k in every layer
        expert = sum(p.numel() for p in model.model.layers[0].mlp.experts[0].parameters())
        active -= (cfg.num_experts - cfg.num_experts_per_tok) * expert * cfg.num_hidden_layers
    return {"llm": llm_proj - proj, "projector": proj, "llm_plus_projector": llm_proj, "active": active,
            "vision_encoder": model.num_parameters(include_vision=True) - llm_proj}


def convert(src: str | Path, dst: str | Path, to: str = "ours", *, preset_name: str | None = None,
            config: str | None = None, tokenizer: str | None = None, vision_encoder: str | None = None,
            bundle_encoder: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0, log=print) -> Path:
    """The Python face of `minimind-v convert`: dispatch on what SRC is and what `to` asks for."""
    src = Path(src)
    if to in ("reference", "hf"):
        if not src.is_dir():
            raise ValueError(f"--to {to} reads a model folder; {src} is not one (convert it to ours first)")
        return export(src, dst, to, dtype, log)
    if to != "ours":
        raise ValueError(f"unknown target {to!r}: use ours, reference or hf")
    if bundle_encoder and not vision_encoder:
        raise ValueError("--bundle-encoder copies the folder named by --vision-encoder; give that too")
    if src.is_file():
        if src.suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(f"{src}: expected an original checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        return convert_checkpoint(src, dst, preset_name=preset_name, config=config, tokenizer=tokenizer,
                                  vision_encoder=vision_encoder, bundle_encoder=bundle_encoder, seed=seed, log=log)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} is neither a checkpoint file nor a model folder (no config.json)")
    if preset_name or config:
        raise ValueError(f"{src} is a folder with its own config.json; --preset/--config apply to bare checkpoints")
    if is_hf_folder(src):
        return convert_hf_folder(src, dst, tokenizer=tokenizer, vision_encoder=vision_encoder,
                                 bundle_encoder=bundle_encoder, seed=seed, log=log)
    if not vision_encoder:
        raise ValueError(f"{src} is already a minimind-v folder: use --vision-encoder DIR to attach an encoder, "
                         f"or --to reference / --to hf to change its layout")
    return reattach_encoder(src, dst, vision_encoder, bundle_encoder, tokenizer, log)
