"""`minimind-v convert` and `export`: bring your own weights in, take them out in another layout.

    minimind-v convert SRC DST [--preset P | --config FILE] [--tokenizer DIR] [--vision-encoder DIR [--bundle-encoder]]
    minimind-v convert FOLDER OUT.pth --to reference         our folder -> the original's .pth layout
    minimind-v export --model FOLDER --to hf OUT             a folder plain `transformers` loads
    minimind-v export --model FOLDER --to onnx|web OUT       ONNX graphs / a browser folder (minimind_v.portable)

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

The formats themselves live beside this module (folder.py, hf_folder.py, reference.py); this one only strings them
together, so `convert --to hf` and `export --to hf` run the same `export()`.
"""
from __future__ import annotations

import json
import pickle
import shutil
import tempfile
from pathlib import Path

import torch

from ..config import ModelConfig
from ..model.siglip import encoder_classes
from ..model.vlm import MiniMindVLM
from ..outputs import check_output, commit, staged_output
from ..tokenizer import Tokenizer
from .folder import FRESH_MARKER, CheckpointMismatch, load_folder, projector_is_fresh, save_model, strict_load
from .generations import detect, label
from .hf_folder import export_hf, is_hf_folder, read_hf_folder
from .load import load_model
from .reference import (CHECKPOINT_SUFFIXES, encoder_vision, load_encoder_tensors, read_state_dict, readable,
                        resolve_config, sibling_encoder, write_reference)


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


def staged_folder(dst: Path, inputs=(), overwrite: bool = False):
    """A temporary folder beside `dst` that becomes `dst` on success and is removed on any error
    (outputs.staged_output: an existing non-empty `dst` needs `overwrite`; an input is never the output)."""
    return staged_output(dst, inputs, overwrite=overwrite, folder=True)


def convert_weights(weights: dict[str, torch.Tensor], cfg: ModelConfig, dst: str | Path, *, source: str,
                    tokenizer: str | Tokenizer | None = None, encoder_dir=None, encoder=None, seed: int = 0,
                    fresh_projector: bool | None = None, inputs=(), overwrite: bool = False, log=print) -> Path:
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
    with staged_folder(dst, inputs, overwrite) as stage:   # written and verified beside DST, renamed only when whole
        write_folder(model, stage, tok, encoder_dir=encoder_dir, encoder=encoder, fresh_projector=fresh)
        verify = load_folder(stage, vision=cfg.vision.path is not None)
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
    log(f"  verified: {dst} loads strictly ({sum(1 for _ in verify.state_dict())} tensors)")
    return dst


def convert_checkpoint(src: str | Path, dst: str | Path, *, preset_name: str | None = None, config: str | None = None,
                       tokenizer: str | None = None, vision_encoder: str | None = None, bundle_encoder: bool = False,
                       seed: int = 0, overwrite: bool = False, log=print) -> Path:
    """An original `.pth`/`.safetensors` checkpoint -> our model folder (see the module docstring)."""
    src = Path(src)
    weights = read_state_dict(src, log)
    generation = detect(weights, str(src))
    cfg = resolve_config(src, preset_name, config, log, generation)
    if generation:
        log(f"{src.name}: {label(generation)} layout (from its projector keys)")
    sibling = sibling_encoder(src)
    if vision_encoder is None and sibling is not None:
        log(f"vision encoder from {sibling} (written there by --to reference)")
        vision_encoder = str(sibling)
    if vision_encoder:
        cfg = cfg.replace(vision=encoder_vision(cfg, vision_encoder, bundle_encoder, log))
    else:                                   # text-only: no encoder, the generation's pixel settings kept
        cfg = cfg.replace(vision=dict(cfg.vision.__dict__, path=None, siglip=None))
    return convert_weights(weights, cfg, dst, source=str(src), tokenizer=tokenizer, encoder_dir=vision_encoder,
                           seed=seed, inputs=(src, tokenizer, vision_encoder), overwrite=overwrite, log=log)


def convert_hf_folder(src: str | Path, dst: str | Path, *, tokenizer: str | None = None,
                      vision_encoder: str | None = None, bundle_encoder: bool = False, seed: int = 0,
                      overwrite: bool = False, log=print) -> Path:
    """A Hugging Face MiniMind-V folder (exported here, or the original's) -> our model folder."""
    src = Path(src)
    hf = readable(read_hf_folder, src)
    cfg, encoder, encoder_dir = hf.cfg, None, None
    if hf.encoder:      # encoder weights inside: rebuild it, strictly, as DST/vision_encoder
        kind = cfg.vision.encoder_class
        if vision_encoder:
            enc_cfg = encoder_classes(kind)[0].from_pretrained(str(vision_encoder))
        elif cfg.vision.siglip is not None:
            enc_cfg = encoder_classes(kind)[0](**cfg.vision.siglip)
        else:
            raise ValueError(f"{src} holds {len(hf.encoder)} vision_encoder.* tensors but no vision_config; give "
                             f"--vision-encoder DIR (the SigLIP2 folder whose config they fit)")
        encoder = load_encoder_tensors(enc_cfg, hf.encoder, str(src), kind)
        log(f"{src}: {len(hf.encoder)} encoder tensors -> {Path(dst) / 'vision_encoder'}")
        cfg = cfg.replace(vision=dict(cfg.vision.__dict__, path="vision_encoder", siglip=None,
                                      patch_size=enc_cfg.patch_size, hidden_size=enc_cfg.hidden_size))
    elif vision_encoder:
        cfg = cfg.replace(vision=encoder_vision(cfg, vision_encoder, bundle_encoder, log))
        encoder_dir = vision_encoder
    if tokenizer is None and (src / "tokenizer.json").exists():
        tokenizer = str(src)
    return convert_weights(hf.weights, cfg, dst, source=str(src), tokenizer=tokenizer, encoder_dir=encoder_dir,
                           encoder=encoder, seed=seed, inputs=(src, tokenizer, vision_encoder), overwrite=overwrite,
                           log=log)


def reattach_encoder(src: str | Path, dst: str | Path, vision_encoder: str, bundle_encoder: bool = False,
                     tokenizer: str | None = None, overwrite: bool = False, log=print) -> Path:
    """One of our folders (e.g. converted without an encoder) -> a copy that uses `vision_encoder`.
    A projector still marked fresh (LLM-only origin) is kept, and so is its mark."""
    src = Path(src)
    model = load_folder(src, vision=False)
    fresh = projector_is_fresh(json.loads((src / "config.json").read_text()))
    cfg = model.cfg.replace(vision=encoder_vision(model.cfg, vision_encoder, bundle_encoder, log))
    sd = {k: v for k, v in model.state_dict().items() if k != "lm_head.weight" or not cfg.tie_word_embeddings}
    tok = tokenizer or (str(src) if (src / "tokenizer.json").exists() else None)
    return convert_weights(sd, cfg, dst, source=str(src), tokenizer=tok, encoder_dir=vision_encoder,
                           fresh_projector=fresh, inputs=(src, tokenizer, vision_encoder), overwrite=overwrite, log=log)


# ---------------------------------------------------------------- writing the original layout

def reference_outputs(dst: str | Path) -> dict[str, tuple[Path, bool]]:
    """What `--to reference DST.pth` writes: the state dict, `<stem>_config.json`, and (for an encoder
    trained here) `<stem>_vision_encoder/` -> {name: (path, is_folder)}."""
    dst = Path(dst)
    return {"weights": (dst, False), "config": (dst.with_name(dst.stem + "_config.json"), False),
            "encoder": (dst.with_name(dst.stem + "_vision_encoder"), True)}


def model_inputs(src: str | Path) -> list[Path]:
    """The folders a model folder reads: itself and, for a LoRA adapter, the base (and its bases)."""
    from .adapter import base_chain
    return [Path(src), *base_chain(src)]


def to_reference(src: str | Path, dst: str | Path, dtype: torch.dtype = torch.float32, log=print,
                 overwrite: bool = False) -> Path:
    """Our folder (or an exported HF folder) -> the original's `.pth` state dict + `<stem>_config.json`
    (reference.write_reference); the encoder is loaded only when it was trained here. Every file is
    written in a stage folder beside DST and moved into place only when all of them are written."""
    src, dst = Path(src), Path(dst)
    outs = reference_outputs(dst)
    inputs = model_inputs(src)
    for path, folder in outs.values():
        check_output(path, inputs, overwrite=overwrite, folder=folder)
    model = load_model(src, vision=False)
    if model.cfg.vision.siglip is not None and model.cfg.vision.path is None:
        model = load_model(src, vision=True)
    dst.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dst.name}.", suffix=".partial", dir=dst.parent))
    try:
        write_reference(model, stage / dst.name, dtype, lambda m: log(m.replace(str(stage), str(dst.parent))),
                        source=str(src))
        for path, folder in outs.values():          # every file written: now each takes its place
            if (stage / path.name).exists():
                commit(stage / path.name, path, folder)
            elif overwrite and path.is_dir():       # a replaced export's encoder folder that no longer belongs
                shutil.rmtree(path)
    finally:
        shutil.rmtree(stage, ignore_errors=True)
    return dst


def export(src: str | Path, dst: str | Path, to: str = "hf", dtype: torch.dtype = torch.float32, log=print,
           overwrite: bool = False, quantize: str | None = None, exporter: str = "torchscript") -> Path:
    """`minimind-v export`: our folder -> a transformers folder (`hf`), the original layout (`reference`), ONNX
    graphs (`onnx`) or a folder that runs in a web browser (`web`; both in minimind_v.portable).
    An existing output needs `overwrite`; an output on or inside the model folder is refused."""
    if to in ("onnx", "web"):
        from ..portable.onnx_export import export_onnx
        from ..portable.web import export_web
        check_output(dst, model_inputs(Path(src)), overwrite=overwrite, folder=True)
        name = {torch.float32: "fp32", torch.float16: "fp16"}.get(dtype, str(dtype).replace("torch.", ""))
        return (export_onnx if to == "onnx" else export_web)(src, dst, dtype=name, quantize=quantize,
                                                             exporter=exporter, overwrite=overwrite, log=log)
    if quantize or exporter != "torchscript":
        raise ValueError(f"--quantize and --exporter apply to --to onnx / web, not --to {to}")
    if to == "reference":
        return to_reference(src, dst, dtype, log, overwrite=overwrite)
    if to != "hf":
        raise ValueError(f"unknown export format {to!r}: use hf or reference")
    src = Path(src)
    inputs = model_inputs(src)
    check_output(dst, inputs, overwrite=overwrite, folder=True)      # refused before loading anything
    model = load_model(src, vision=True)
    tok = Tokenizer.load(src) if (src / "tokenizer.json").exists() else None
    with staged_folder(Path(dst), inputs, overwrite) as stage:        # never a half-written folder
        export_hf(model, stage, tok, dtype, log=lambda m: log(m.replace(str(stage), str(dst))), source=src)
    return Path(dst)


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
            bundle_encoder: bool = False, dtype: torch.dtype = torch.float32, seed: int = 0, log=print,
            overwrite: bool = False) -> Path:
    """The Python face of `minimind-v convert`: dispatch on what SRC is and what `to` asks for. DST is checked
    first (outputs.py): an existing one needs `overwrite`, one on or inside an input is refused. An OS-level
    failure on the way (an encoder folder whose weights transformers cannot open, a full disk) comes out as
    one ValueError naming it; a missing file stays FileNotFoundError."""
    try:
        if to == "ours":
            check_output(dst, (src, config, tokenizer, vision_encoder), overwrite=overwrite, folder=True)
        sibling = Path(src).with_name(Path(src).stem + "_config.json")
        if config is not None or (Path(src).is_file() and sibling.is_file()):
            check_config_file(config if config is not None else sibling)
        return _convert(Path(src), dst, to, preset_name=preset_name, config=config, tokenizer=tokenizer,
                        vision_encoder=vision_encoder, bundle_encoder=bundle_encoder, dtype=dtype, seed=seed, log=log,
                        overwrite=overwrite)
    except FileNotFoundError:
        raise
    except (OSError, pickle.UnpicklingError) as e:    # e.g. an encoder folder whose weights are a refused pickle
        first = str(e).strip().splitlines()[0][:300] if str(e).strip() else ""
        raise ValueError(f"convert {src} -> {dst} failed: {type(e).__name__}: {first}") from None


def check_config_file(config: str | Path) -> None:
    """--config must be a JSON object (its fields are type-checked when the config is built)."""
    try:
        d = json.loads(Path(config).read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"--config {config} is not valid JSON: {e}") from None
    if not isinstance(d, dict):
        raise ValueError(f"--config {config} must hold a JSON object of config fields, not a {type(d).__name__}")


def _convert(src: Path, dst, to, *, preset_name, config, tokenizer, vision_encoder, bundle_encoder, dtype, seed,
             log, overwrite) -> Path:
    if to in ("reference", "hf"):
        if not src.is_dir():
            raise ValueError(f"--to {to} reads a model folder; {src} is not one (convert it to ours first)")
        return export(src, dst, to, dtype, log, overwrite=overwrite)
    if to != "ours":
        raise ValueError(f"unknown target {to!r}: use ours, reference or hf")
    if bundle_encoder and not vision_encoder:
        raise ValueError("--bundle-encoder copies the folder named by --vision-encoder; give that too")
    if src.is_file():
        if src.suffix not in CHECKPOINT_SUFFIXES:
            raise ValueError(f"{src}: expected an original checkpoint ({', '.join(CHECKPOINT_SUFFIXES)})")
        return convert_checkpoint(src, dst, preset_name=preset_name, config=config, tokenizer=tokenizer,
                                  vision_encoder=vision_encoder, bundle_encoder=bundle_encoder, seed=seed,
                                  overwrite=overwrite, log=log)
    if not (src / "config.json").exists():
        raise FileNotFoundError(f"{src} is neither a checkpoint file nor a model folder (no config.json)")
    if preset_name or config:
        raise ValueError(f"{src} is a folder with its own config.json; --preset/--config apply to bare checkpoints")
    if is_hf_folder(src):
        return convert_hf_folder(src, dst, tokenizer=tokenizer, vision_encoder=vision_encoder,
                                 bundle_encoder=bundle_encoder, seed=seed, overwrite=overwrite, log=log)
    if not vision_encoder:
        raise ValueError(f"{src} is already a minimind-v folder: use --vision-encoder DIR to attach an encoder, "
                         f"or --to reference / --to hf to change its layout")
    return reattach_encoder(src, dst, vision_encoder, bundle_encoder, tokenizer, overwrite=overwrite, log=log)
