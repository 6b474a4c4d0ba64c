"""Model configuration: one dataclass for the LLM + projector + vision encoder, and named presets.

Field names follow the original MiniMind-V `VLMConfig` (hidden_size, num_hidden_layers, ...), so a
config file written by the original code reads straight into `ModelConfig.from_dict`. Derived values
(head_dim, intermediate_size) are filled in by `__post_init__` with the original's formulas:

    head_dim          = hidden_size // num_attention_heads          (768 // 8 = 96)
    intermediate_size = ceil(hidden_size * pi / 64) * 64            (768 -> 2432, 64 -> 256)
    image_token_len   = (image_size // patch_size) ** 2 // merge     (256 patches / 4 = 64)
"""
from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


ENCODER_CLASSES = ("siglip2", "siglip")
RESIZES = ("square", "naflex")
RESAMPLES = ("bilinear", "bicubic")


def check_field_types(obj, prefix: str = "") -> None:
    """Every int / float / bool / str field of a config dataclass holds that type (a JSON "64" for 64, a list
    for a number, true for a count): one ValueError naming the field, before any arithmetic on it. Floats
    must be finite; an int is accepted where a float is asked for."""
    for f in dataclasses.fields(obj):
        v = getattr(obj, f.name)
        kinds = {k.strip() for k in str(f.type).split("|")}
        if v is None and "None" in kinds:
            continue
        if "int" in kinds and isinstance(v, int) and not isinstance(v, bool):
            continue
        if "float" in kinds and isinstance(v, (int, float)) and not isinstance(v, bool):
            if not math.isfinite(v):
                raise ValueError(f"config field {prefix}{f.name} must be a finite number, got {v!r}")
            continue
        if "bool" in kinds and isinstance(v, bool):
            continue
        if "str" in kinds and isinstance(v, str):
            continue
        if kinds & {"int", "float", "bool", "str"}:
            want = " or ".join(sorted(kinds & {"int", "float", "bool", "str", "None"}))
            raise ValueError(f"config field {prefix}{f.name} must be {want}, got {type(v).__name__} {str(v)[:40]!r}")


@dataclass
class VisionConfig:
    """Where the image encoder comes from and how pictures are cut into patches.

    `path` names a local Hugging Face folder holding the encoder (the March 2026 recipe uses the
    `Siglip2VisionModel` "siglip2-base-p16-ve", the 0420 one the `SiglipVisionModel` "siglip2-base-p32-256-ve").
    When `path` is None, `siglip` holds the encoder config dict and the encoder is built from scratch with
    random weights (the tiny demo encoder, which is then trained).

    `encoder_class` names the transformers class ("siglip2": NaFlex, Linear patch embedding; "siglip": v1,
    Conv2d patch embedding on a (3, H, W) picture). `resize` says how a picture becomes pixels:
    "square" squashes it to image_size x image_size (every patch real; fine for models trained here),
    "naflex" keeps the aspect ratio with at most (image_size / patch_size)^2 patches, padding the rest
    (what the original's Siglip2ImageProcessor does; siglip2 only). `resample` is the PIL filter.
    """

    path: str | None = None
    siglip: dict | None = None
    image_size: int = 256          # images are resized to a square of this side
    patch_size: int = 16           # SigLIP2 B/16
    hidden_size: int = 768         # encoder width = projector input width (before merging)
    image_mean: float = 0.5        # SigLIP normalisation: (x/255 - 0.5) / 0.5
    image_std: float = 0.5
    encoder_class: str = "siglip2"  # "siglip2" (Siglip2VisionModel) | "siglip" (SiglipVisionModel, v1)
    resize: str = "square"          # "square" | "naflex" (aspect kept, padded; the original p16 processor)
    resample: str = "bilinear"      # "bilinear" | "bicubic" (the original p32 processor)

    def __post_init__(self):
        check_field_types(self, "vision.")
        checks = (("encoder_class", ENCODER_CLASSES), ("resize", RESIZES), ("resample", RESAMPLES))
        for name, allowed in checks:
            if getattr(self, name) not in allowed:
                raise ValueError(f"vision.{name}={getattr(self, name)!r}; choose from {list(allowed)}")
        if self.resize == "naflex" and self.encoder_class != "siglip2":
            raise ValueError("vision.resize='naflex' needs encoder_class='siglip2' (SigLIP v1 takes square pictures)")

    @property
    def num_patches(self) -> int:
        side = self.image_size // self.patch_size
        return side * side


@dataclass
class ModelConfig:
    """Everything needed to build a MiniMind-V model (LLM, projector, vision encoder)."""

    # --- LLM (names as in the original VLMConfig) ---
    hidden_size: int = 768
    num_hidden_layers: int = 8
    num_attention_heads: int = 8
    num_key_value_heads: int = 4
    head_dim: int | None = None
    intermediate_size: int | None = None
    vocab_size: int = 6400
    rms_norm_eps: float = 1e-6
    rope_theta: float = 1e6
    max_position_embeddings: int = 32768
    rope_scaling: dict | None = None      # {"type": "yarn", "factor": 16, "original_max_position_embeddings": 2048, ...}
    tie_word_embeddings: bool = True
    dropout: float = 0.0
    bos_token_id: int = 1
    eos_token_id: int = 2
    pad_token_id: int = 0
    # --- MoE ---
    use_moe: bool = False
    num_experts: int = 4
    num_experts_per_tok: int = 1
    moe_intermediate_size: int | None = None
    norm_topk_prob: bool = True
    router_aux_loss_coef: float = 5e-4
    # --- vision side ---
    image_token_id: int = 12
    image_token_len: int | None = None    # visual tokens per image; derived from the vision config
    merge: int = 4                        # consecutive patch features concatenated per visual token
    projector_norm: bool = False          # LayerNorm first in the MLP (`mlp.0`, then Linear mlp.1 / mlp.3): the 0420
                                          # layout; without it Linear mlp.0 / mlp.2 (the March 2026 layout)
    visual_pos_embed: bool = False        # a learned vector per visual-token place added after the projector
    vision: VisionConfig = field(default_factory=VisionConfig)

    def __post_init__(self):
        if isinstance(self.vision, dict):
            self.vision = VisionConfig(**self.vision)
        if not isinstance(self.vision, VisionConfig):
            raise ValueError(f"config field vision must be an object, got {type(self.vision).__name__}")
        check_field_types(self)
        if self.head_dim is None:
            self.head_dim = self.hidden_size // self.num_attention_heads
        if self.intermediate_size is None:
            self.intermediate_size = math.ceil(self.hidden_size * math.pi / 64) * 64
        if self.moe_intermediate_size is None:
            self.moe_intermediate_size = self.intermediate_size
        derived = self.vision.num_patches // self.merge
        if self.image_token_len is None:
            self.image_token_len = derived
        if self.vision.num_patches % self.merge:
            raise ValueError(f"{self.vision.num_patches} patches are not divisible by merge={self.merge}")
        if self.image_token_len != derived:
            raise ValueError(
                f"image_token_len={self.image_token_len} but the encoder gives {self.vision.num_patches} patches "
                f"/ merge {self.merge} = {derived} visual tokens per image")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError("num_attention_heads must be a multiple of num_key_value_heads")

    # ---- serialisation ----
    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelConfig":
        """Build from our own config.json or from an original-format config (extra keys ignored)."""
        d = dict(d)
        if "image_ids" in d and "image_token_id" not in d:       # original field name
            d["image_token_id"] = d["image_ids"][0]
        if d.get("pad_token_id") is None:
            d["pad_token_id"] = 0
        names = {f.name for f in dataclasses.fields(cls)}
        kept = {k: v for k, v in d.items() if k in names}
        if "vision" not in kept and "image_hidden_size" in d:
            kept["vision"] = VisionConfig(hidden_size=d["image_hidden_size"])
        return cls(**kept)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> "ModelConfig":
        return cls.from_dict(json.loads(Path(path).read_text()))

    def replace(self, **kw: Any) -> "ModelConfig":
        """A copy with fields changed; derived fields that were at their derived value re-derive."""
        if isinstance(kw.get("vision"), dict):
            kw["vision"] = VisionConfig(**kw["vision"])
        fresh = {"head_dim": self.hidden_size // self.num_attention_heads,
                 "intermediate_size": math.ceil(self.hidden_size * math.pi / 64) * 64,
                 "image_token_len": self.vision.num_patches // self.merge}
        fresh["moe_intermediate_size"] = self.intermediate_size
        for name, value in fresh.items():
            if name not in kw and getattr(self, name) == value:
                kw[name] = None
        return dataclasses.replace(self, **kw)


# A tiny SigLIP2 for tests and the CPU demo: same class as the real encoder, trained from scratch.
def tiny_siglip(hidden: int = 128, layers: int = 2, heads: int = 4, image_size: int = 32,
                patch: int = 4) -> VisionConfig:
    n = (image_size // patch) ** 2
    return VisionConfig(
        path=None, image_size=image_size, patch_size=patch, hidden_size=hidden,
        siglip=dict(hidden_size=hidden, intermediate_size=hidden * 4, num_hidden_layers=layers,
                    num_attention_heads=heads, patch_size=patch, num_patches=n, vision_use_head=False))


def _preset_tiny() -> ModelConfig:
    return ModelConfig(hidden_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=6400, vision=tiny_siglip())


def _preset_3v() -> ModelConfig:
    return ModelConfig(vision=VisionConfig(path=None, siglip=SIGLIP2_B16, image_size=256, patch_size=16))


def _preset_3v_moe() -> ModelConfig:
    return _preset_3v().replace(use_moe=True)


def _preset_2603() -> ModelConfig:
    """The March 2026 release (commit e51dcf0): SigLIP2 B/16 NaFlex pixels, 4-merge, Linear/GELU/Linear."""
    return ModelConfig(vision=VisionConfig(path=None, siglip=SIGLIP2_B16, image_size=256, patch_size=16,
                                           resize="naflex"))


def _preset_0420() -> ModelConfig:
    """The 2026-04-20 release: SigLIP v1-class B/32 at 256 px (bicubic squash), no merge, LayerNorm first."""
    return ModelConfig(merge=1, projector_norm=True,
                       vision=VisionConfig(path=None, siglip=SIGLIP_B32, image_size=256, patch_size=32,
                                           encoder_class="siglip", resample="bicubic"))


# Shape of siglip2-base-patch16-naflex (the encoder the real recipe freezes). Used to build a random
# encoder of the right size for benchmarks; a user points `vision.path` at the real folder instead.
SIGLIP2_B16 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                   patch_size=16, num_patches=256, vision_use_head=False)

# Shape of siglip2-base-p32-256-ve (a SiglipVisionModel: Conv2d patch embedding, 64 fixed positions).
SIGLIP_B32 = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                  patch_size=32, image_size=256)

# "minimind-3v" is the March architecture with square pixels (for training from scratch); the dated
# presets reproduce each upstream release exactly, pixels included.
PRESETS = {
    "tiny": _preset_tiny,
    "minimind-3v": _preset_3v,
    "minimind-3v-moe": _preset_3v_moe,
    "minimind-3v-2603": _preset_2603,
    "minimind-3v-2603-moe": lambda: _preset_2603().replace(use_moe=True),
    "minimind-3v-0420": _preset_0420,
    "minimind-3v-0420-moe": lambda: _preset_0420().replace(use_moe=True),
}


def preset(name: str, **overrides: Any) -> ModelConfig:
    """A named preset, with any field overridden (`preset("tiny", hidden_size=256)`)."""
    if name not in PRESETS:
        raise KeyError(f"unknown preset {name!r}; choose from {sorted(PRESETS)}")
    cfg = PRESETS[name]()
    return cfg.replace(**overrides) if overrides else cfg


# ---------------------------------------------------------------- devices and dtypes (one table for every CLI)

DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}    # --dtype name -> torch attribute


def torch_device(name: str = "auto"):
    """'auto' -> CUDA when available, else CPU; anything else as torch.device(name)."""
    import torch
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def torch_dtype(name: str, device=None):
    """'fp32' | 'bf16' | 'fp16' -> the torch dtype; 'auto' -> bf16 on CUDA (fp16 where the GPU lacks bf16),
    fp32 elsewhere."""
    import torch
    if name == "auto":
        if device is not None and torch.device(device).type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, DTYPES[name])


@dataclass
class SamplingParams:
    """How a reply is drawn: the same settings for the PyTorch generator (model/generate.py) and the
    torch-free ONNX runtime (portable/runtime.py)."""
    max_new_tokens: int = 128
    temperature: float = 0.0          # 0 = greedy
    top_p: float = 1.0
    top_k: int = 0
    seed: int | None = None
    stop_ids: tuple = ()
