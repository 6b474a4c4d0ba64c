"""Write a model as a Hugging Face folder that plain `transformers` loads, and read such folders back.

    DIR/config.json                     MiniMindVConfig: the original's field names + vision_config, merge, ...
    DIR/model.safetensors               LLM + projector + SigLIP2 encoder, original parameter names; the tied
                                        lm_head is stored once (as model.embed_tokens.weight) and re-tied on load
    DIR/configuration_minimind_v.py     remote code (`trust_remote_code=True`), standalone: needs only
    DIR/modeling_minimind_v.py            torch + transformers, not this package
    DIR/image_processing_minimind_v.py
    DIR/preprocessor_config.json        AutoImageProcessor -> MiniMindVImageProcessor (our exact pixels)
    DIR/generation_config.json          bos / eos / pad ids
    DIR/tokenizer.json, tokenizer_config.json
    DIR/README.md                       model card

Names inside the file are the original's. The encoder's are `vision_encoder.vision_model.*` (how the
original, under transformers 4, names the Siglip2VisionModel it keeps in `vision_encoder`); in memory we
wrap it one level deeper (`vision_encoder.encoder.*`), named flat as transformers 5 names it under every
version (model/transformers_compat.py). `read_hf_folder` also reads the original project's converted
folders (`model_type: minimind-v`, `pytorch_model.bin` or safetensors, possibly sharded).
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from ..config import ModelConfig
from ..model.transformers_compat import flat_name
from .card import model_card, training_history
from .fields import default_vision, model_config_from_original, original_config, siglip_fields
from .folder import strict_load

HERE = Path(__file__).resolve().parent.parent / "hf"   # the remote-code files ship from minimind_v/hf
CODE_FILES = ("configuration_minimind_v.py", "modeling_minimind_v.py", "image_processing_minimind_v.py", "pixels.py",
              "processing_minimind_v.py")
AUTO_MAP = {"AutoConfig": "configuration_minimind_v.MiniMindVConfig",
            "AutoModelForCausalLM": "modeling_minimind_v.MiniMindVForCausalLM",
            "AutoModelForImageTextToText": "modeling_minimind_v.MiniMindVForCausalLM"}
OURS_ENC, HF_ENC = "vision_encoder.encoder.", "vision_encoder.vision_model."
# The file always carries the 4.x form (`vision_encoder.vision_model.embeddings...`); our model's state dict
# names the encoder flat under every version (model/transformers_compat.py), so the mapping is a prefix swap.


def is_hf_config(raw: dict) -> bool:
    """config.json of a Hugging Face MiniMind-V folder (`export --to hf`, or the original's), not ours."""
    return raw.get("model_type") in ("minimind-v", "minimind") and "vision" not in raw


def is_hf_folder(folder: str | Path) -> bool:
    """A Hugging Face MiniMind-V folder (ours exported, or the original's), not one of our model folders."""
    f = Path(folder) / "config.json"
    if not f.exists():
        return False
    return is_hf_config(json.loads(f.read_text()))


# ---------------------------------------------------------------- export

def hf_config(model) -> dict:
    """config.json content for the exported folder."""
    cfg: ModelConfig = model.cfg
    d = original_config(cfg)
    d.pop("rope_scaling")            # stored as yarn_scaling: transformers 5 rewrites `rope_scaling`
    enc = model.vision_encoder.encoder.config if model.vision_encoder is not None else None
    d.update(yarn_scaling=cfg.rope_scaling, vision_config=siglip_fields(enc) if enc is not None else None,
             merge=cfg.merge, projector_norm=cfg.projector_norm, image_size=cfg.vision.image_size,
             vision_encoder_class=cfg.vision.encoder_class, image_resize=cfg.vision.resize,
             image_resample=cfg.vision.resample)
    if cfg.visual_pos_embed:
        d["visual_pos_embed"] = True
    return d


def hf_state_dict(model, dtype: torch.dtype) -> dict[str, torch.Tensor]:
    """Our state dict -> the exported names (encoder one level up; tied lm_head dropped), cast to dtype."""
    out = {}
    for k, v in model.state_dict().items():
        if k == "lm_head.weight" and model.cfg.tie_word_embeddings:
            continue
        name = HF_ENC + flat_name(k[len(OURS_ENC):]) if k.startswith(OURS_ENC) else k
        out[name] = v.detach().to("cpu", dtype if v.is_floating_point() else v.dtype).contiguous()
    return out


def export_hf(model, out: str | Path, tokenizer=None, dtype: torch.dtype = torch.float32, log=print,
              source: str | Path | None = None) -> Path:
    """Write `model` (a MiniMindVLM, encoder loaded) as a transformers-loadable folder. `source`: the model
    folder it came from, whose run records (train_config.json) tell the model card what it was trained on."""
    from ..hf.configuration_minimind_v import MiniMindVConfig
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    if model.vision_encoder is None:
        log("note: this model has no vision encoder; the exported folder is text-only (vision_config null)")
    hf = hf_config(model)
    config = MiniMindVConfig(**hf)
    config.architectures = ["MiniMindVForCausalLM"]
    config.auto_map = dict(AUTO_MAP)
    config.dtype = dtype               # what dtype="auto" loads (transformers 5 does so by default)
    config.save_pretrained(str(out))
    tensors = hf_state_dict(model, dtype)
    tmp = out / "model.safetensors.tmp"
    save_file(tensors, str(tmp), metadata={"format": "pt", "producer": "minimind-v"})
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)       # a folder to share: readable like the other files (safetensors writes 0600)
    tmp.replace(out / "model.safetensors")
    for name in CODE_FILES:
        shutil.copyfile(HERE / name, out / name)
    (out / "preprocessor_config.json").write_text(json.dumps({
        "auto_map": {"AutoImageProcessor": "image_processing_minimind_v.MiniMindVImageProcessor"},
        "image_size": model.cfg.vision.image_size, "patch_size": model.cfg.vision.patch_size,
        "image_mean": model.cfg.vision.image_mean, "image_std": model.cfg.vision.image_std,
        "resize": model.cfg.vision.resize, "resample": model.cfg.vision.resample,
        "output": "picture" if model.cfg.vision.encoder_class == "siglip" else "patches"}, indent=2) + "\n")
    (out / "generation_config.json").write_text(json.dumps({
        "bos_token_id": model.cfg.bos_token_id, "eos_token_id": model.cfg.eos_token_id,
        "pad_token_id": model.cfg.pad_token_id}, indent=2) + "\n")
    if tokenizer is not None:
        tokenizer.save(out)
        only_ids_and_mask(out / "tokenizer_config.json")
        write_processor(out, model.cfg.image_token_len)
    else:
        log("note: no tokenizer given; the folder has none (AutoTokenizer and chat need tokenizer.json)")
    (out / "README.md").write_text(model_card(model, hf, dtype, training_history(source)))
    log(f"exported {len(tensors)} tensors ({sum(t.numel() for t in tensors.values()):,} values, "
        f"{str(dtype).replace('torch.', '')}) to {out}")
    return out


def only_ids_and_mask(tokenizer_config: Path) -> None:
    """The model takes no token_type_ids; say so, or transformers 4.x's PreTrainedTokenizerFast returns them and
    `model.generate(**tok(texts))` refuses the unused argument."""
    d = json.loads(tokenizer_config.read_text())
    d["model_input_names"] = ["input_ids", "attention_mask"]
    tokenizer_config.write_text(json.dumps(d, indent=2, ensure_ascii=False) + "\n")


def write_processor(out: Path, image_token_len: int) -> None:
    """processor_config.json + chat_template.jinja: AutoProcessor -> MiniMindVProcessor (tokenizer, image
    processor and the chat template together; see hf/processing_minimind_v.py). The same files both
    transformers 4.57 and 5.x read and write."""
    from ..hf.processing_minimind_v import CHAT_TEMPLATE
    (out / "processor_config.json").write_text(json.dumps({
        "processor_class": "MiniMindVProcessor",
        "auto_map": {"AutoProcessor": "processing_minimind_v.MiniMindVProcessor"},
        "image_seq_length": image_token_len, "image_token": "<|image_pad|>"}, indent=2) + "\n")
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE)


# ---------------------------------------------------------------- import

@dataclass
class HFFolder:
    """What an HF MiniMind-V folder holds, in our terms."""
    cfg: ModelConfig                       # vision.siglip = the bundled encoder's config, or no encoder
    weights: dict[str, torch.Tensor]       # LLM + projector, our names, fp32
    encoder: dict[str, torch.Tensor]       # Siglip2VisionModel weights, flat names (`embeddings...`)
    raw: dict                              # config.json as written


def read_weights(folder: Path) -> dict[str, torch.Tensor]:
    """model.safetensors / pytorch_model.bin, single or sharded (index json); `.bin` via weights_only."""
    for index in ("model.safetensors.index.json", "pytorch_model.bin.index.json"):
        if (folder / index).exists():
            files = sorted(set(json.loads((folder / index).read_text())["weight_map"].values()))
            sd = {}
            for f in files:
                sd.update(read_weights_file(folder / f))
            return sd
    for name in ("model.safetensors", "pytorch_model.bin"):
        if (folder / name).exists():
            return read_weights_file(folder / name)
    raise FileNotFoundError(f"{folder} has no model.safetensors or pytorch_model.bin")


def read_weights_file(path: Path) -> dict[str, torch.Tensor]:
    """A .safetensors file, or a torch pickle read with weights_only=True."""
    if path.suffix == ".safetensors":
        return load_file(str(path))
    return torch.load(str(path), map_location="cpu", weights_only=True)


def read_hf_folder(folder: str | Path) -> HFFolder:
    folder = Path(folder)
    raw = json.loads((folder / "config.json").read_text())
    sd = {k: (v.float() if v.is_floating_point() else v) for k, v in read_weights(folder).items()}
    encoder = {k[len(HF_ENC):]: v for k, v in sd.items() if k.startswith(HF_ENC)}
    weights = {k: v for k, v in sd.items() if not k.startswith("vision_encoder.")}
    stray = sorted(k for k in sd if k.startswith("vision_encoder.") and not k.startswith(HF_ENC))
    if stray:
        raise ValueError(f"{folder}: encoder tensors outside vision_encoder.vision_model.*: {stray[:6]}")
    venc = raw.get("vision_config")
    if venc:
        pre = folder / "preprocessor_config.json"
        pp = json.loads(pre.read_text()) if pre.exists() else {}
        vision = dict(path=None, siglip=siglip_fields(venc), hidden_size=venc["hidden_size"],
                      patch_size=venc["patch_size"], image_size=raw.get("image_size", pp.get("image_size", 256)),
                      image_mean=pp.get("image_mean", 0.5), image_std=pp.get("image_std", 0.5),
                      encoder_class=raw.get("vision_encoder_class", "siglip2"),
                      resize=raw.get("image_resize", "square"), resample=raw.get("image_resample", "bilinear"))
        if not encoder:
            raise ValueError(f"{folder}: config.json has a vision_config but the weights hold no vision_encoder.* "
                             f"tensors")
    elif "merge" not in raw:            # the original's own folder: its projector keys tell the generation
        from ..formats.generations import config_for, detect
        return HFFolder(config_for(raw, detect(weights, str(folder)), str(folder)), weights, encoder, raw)
    else:
        vision = default_vision(raw)
    cfg = model_config_from_original(raw, vision)
    return HFFolder(cfg, weights, encoder, raw)


def load_hf_model(folder: str | Path, vision: bool = True):
    """An HF MiniMind-V folder -> our MiniMindVLM, loaded strictly (this is what `load_model` uses)."""
    from ..model.vlm import MiniMindVLM
    folder = Path(folder)
    hf = read_hf_folder(folder)
    if hf.encoder and hf.cfg.vision.siglip is None:
        raise ValueError(f"{folder} holds {len(hf.encoder)} vision_encoder.* tensors but config.json has no "
                         f"vision_config to build the encoder from; convert it with `minimind-v convert {folder} OUT "
                         f"--vision-encoder SIGLIP2_DIR`")
    with_encoder = vision and hf.cfg.vision.siglip is not None
    model = MiniMindVLM(hf.cfg, vision=with_encoder, base_dir=folder)
    sd = dict(hf.weights)
    allow = set()
    if with_encoder:
        sd.update({OURS_ENC + k: v for k, v in hf.encoder.items()})
    else:
        allow = {k for k in model.state_dict() if k.startswith("vision_encoder.")}
    strict_load(model, sd, allow, source=str(folder))
    return model
