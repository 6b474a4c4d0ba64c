"""Which upstream MiniMind-V generation a checkpoint belongs to, and what that generation implies.

Upstream has published two layouts that share the LLM but not the vision side:

    generation  commit    encoder (class, patch, pixels)                  projector keys             merge
    "2603"      e51dcf0   Siglip2VisionModel p16, NaFlex, bilinear        mlp.0 / mlp.2 (Linear)     4
    "0420"      9595617   SiglipVisionModel p32, 256 x 256, bicubic       mlp.0 LayerNorm, mlp.1/3   1

Neither writes the generation into its files, so it is read from the projector keys (and checked
against any config that says otherwise): `vision_proj.mlp.3.*` only exists in 0420, `vision_proj.mlp.2.*`
(with a 2-D weight) only in 2603. A file with both, or with neither but some other `vision_proj.*`, is
refused by name. An LLM-only file (no `vision_proj.*`) fits both; the config or preset decides.
"""
from __future__ import annotations

import json
import math
from pathlib import Path

from ..config import ModelConfig

GENERATIONS = ("2603", "0420")
PRESET_OF = {"2603": "minimind-3v-2603", "0420": "minimind-3v-0420"}
PROJECTOR = {"2603": dict(merge=4, projector_norm=False), "0420": dict(merge=1, projector_norm=True)}
# Without the encoder folder's preprocessor_config.json a March model keeps square pixels (what this
# project did before); the folders upstream publishes carry one, and it switches to NaFlex.
ENCODER = {"2603": dict(encoder_class="siglip2", patch_size=16, resize="square", resample="bilinear"),
           "0420": dict(encoder_class="siglip", patch_size=32, resize="square", resample="bicubic")}


class GenerationError(ValueError):
    """A file whose generation cannot be told, or that contradicts the config it came with."""


def detect(weights: dict, source: str) -> str | None:
    """'2603' | '0420' from the projector keys; None for an LLM-only state dict."""
    proj = sorted(k for k in weights if k.startswith("vision_proj."))
    if not proj:
        return None
    has = {i: any(k.startswith(f"vision_proj.mlp.{i}.") for k in proj) for i in range(4)}
    if has[3] and has[2]:
        raise GenerationError(f"{source}: mixed projector keys: vision_proj.mlp.2.* (March 2026 layout) and "
                              f"vision_proj.mlp.3.* (0420 layout) in one file; it is neither generation")
    if has[3] and has[1] and has[0] and weights["vision_proj.mlp.0.weight"].dim() == 1:
        return "0420"
    if has[2] and has[0] and not has[1] and weights["vision_proj.mlp.0.weight"].dim() == 2:
        return "2603"
    raise GenerationError(f"{source}: projector keys {proj[:8]} match neither upstream layout (March 2026: "
                          f"Linear mlp.0 / mlp.2; 0420: LayerNorm mlp.0, Linear mlp.1 / mlp.3)")


def generation_of(cfg: ModelConfig) -> str | None:
    """The generation whose projector this config builds (None: a layout of our own)."""
    for gen, fields in PROJECTOR.items():
        if cfg.merge == fields["merge"] and cfg.projector_norm == fields["projector_norm"]:
            return gen
    return None


def check_matches(cfg: ModelConfig, gen: str | None, source: str, told_by: str) -> None:
    """Refuse a config (from a preset or file) that builds the other generation's projector."""
    have = generation_of(cfg)
    if gen is None or have == gen:
        return
    raise GenerationError(
        f"{source} is a {label(gen)} checkpoint but {told_by} describes a "
        f"{label(have) if have else f'merge={cfg.merge}, projector_norm={cfg.projector_norm}'} model; pass "
        f"--preset {PRESET_OF[gen]} (full size) or a --config file of the right generation")


def label(gen: str) -> str:
    return {"2603": "March 2026 (e51dcf0)", "0420": "0420 (2026-04-20)"}[gen]


def vision_block(gen: str, d: dict) -> dict:
    """The vision config a generation implies for an original config dict (no encoder folder yet)."""
    enc = ENCODER[gen]
    tokens = int(d.get("image_token_len", 64))
    patches = tokens * PROJECTOR[gen]["merge"]
    side = math.isqrt(patches)
    if side * side != patches:
        raise GenerationError(f"image_token_len {tokens} does not give a square grid for the {label(gen)} layout")
    return dict(path=None, siglip=None, hidden_size=int(d.get("image_hidden_size", 768)),
                image_size=side * enc["patch_size"], **enc)


def original_dict_generation(d: dict) -> str | None:
    """A generation written into an original-style config (our `--to reference` writes merge / norm)."""
    if "merge" not in d and "projector_norm" not in d:
        return None
    fields = dict(merge=int(d.get("merge", 4)), projector_norm=bool(d.get("projector_norm", False)))
    for gen, want in PROJECTOR.items():
        if want == fields:
            return gen
    return None


def config_for(d: dict, gen: str | None, source: str) -> ModelConfig:
    """An original config dict + the detected generation -> ModelConfig with that generation's vision side."""
    from .fields import default_vision, model_config_from_original
    said = original_dict_generation(d)
    if said is None and ("merge" in d or "projector_norm" in d):     # a layout of our own (e.g. the demo's)
        return model_config_from_original(d, default_vision(d))
    if gen is not None and said is not None and said != gen:
        raise GenerationError(f"{source}: the weights are {label(gen)} but its config says {label(said)} "
                              f"(merge / projector_norm); pass the right --config or --preset {PRESET_OF[gen]}")
    gen = gen or said or "2603"
    flat = dict(d, **PROJECTOR[gen])
    return model_config_from_original(flat, vision_block(gen, d))


def encoder_folder_kind(encoder_dir: str | Path) -> str:
    """'siglip2' | 'siglip' for a local encoder folder, from its config.json."""
    from ..model.siglip import encoder_kind_of
    f = Path(encoder_dir) / "config.json"
    if not f.exists():
        raise FileNotFoundError(f"--vision-encoder {encoder_dir} has no config.json (expected a local SigLIP "
                                f"folder: siglip2-base-p16-ve for March 2026, siglip2-base-p32-256-ve for 0420)")
    return encoder_kind_of(json.loads(f.read_text()), str(f))


def processor_settings(encoder_dir: str | Path) -> dict:
    """resize / resample / mean / std from the folder's preprocessor_config.json, when it has one."""
    f = Path(encoder_dir) / "preprocessor_config.json"
    if not f.exists():
        return {}
    pp = json.loads(f.read_text())
    out = {}
    kind = pp.get("image_processor_type", "")
    if kind.startswith("Siglip2"):
        out["resize"] = "naflex"
    elif kind.startswith("Siglip"):
        out["resize"] = "square"
    if "resample" in pp:
        names = {2: "bilinear", 3: "bicubic"}
        if pp["resample"] not in names:
            raise GenerationError(f"{f}: resample={pp['resample']} (only 2 bilinear / 3 bicubic are supported)")
        out["resample"] = names[pp["resample"]]
    for key, ours in (("image_mean", "image_mean"), ("image_std", "image_std")):
        v = pp.get(key)
        if isinstance(v, list):
            if len(set(v)) != 1:
                raise GenerationError(f"{f}: per-channel {key} {v} is not supported (one value for all channels)")
            v = v[0]
        if v is not None:
            out[ours] = float(v)
    return out


def upgrade_norm_keys(sd: dict, cfg: ModelConfig, log=None) -> dict:
    """Folders written before the 0420 layout held the projector LayerNorm as `vision_proj.norm.*` with the
    Linears at `mlp.0` / `mlp.2`; the same weights now sit at `mlp.0` (norm), `mlp.1`, `mlp.3`, as upstream
    names them. Renames exactly that pattern (nothing else), so such folders keep loading strictly."""
    if not cfg.projector_norm or "vision_proj.norm.weight" not in sd or "vision_proj.mlp.3.weight" in sd:
        return sd
    moves = {"vision_proj.norm.": "vision_proj.mlp.0.", "vision_proj.mlp.0.": "vision_proj.mlp.1.",
             "vision_proj.mlp.2.": "vision_proj.mlp.3."}
    out = {}
    for k, v in sd.items():
        new = next((to + k[len(old):] for old, to in moves.items() if k.startswith(old)), k)
        out[new] = v
    if log:
        log("projector keys renamed to the 0420 layout (vision_proj.norm -> mlp.0, mlp.0 -> mlp.1, mlp.2 -> mlp.3)")
    return out
