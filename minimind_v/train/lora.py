"""LoRA fine-tuning with PEFT: train, save as an adapter folder, load, merge.

Why PEFT rather than our own adapter layer: the adapter folder it writes (`adapter_config.json` +
`adapter_model.safetensors`) is the format the ecosystem loads, so the adapter trained here loads with
`PeftModel.from_pretrained` on the folder `minimind-v export --to hf` writes (the LLM and projector keep
the original's parameter names in both), and PEFT's merge is well tested.

What is adapted: the LLM's linear layers named by `--lora-targets` (q/k/v/o projections and the SwiGLU
gate/up/down, also inside MoE experts), matched by a regular expression anchored at `model.layers.N.`, so
the SigLIP encoder's own `q_proj`/`k_proj`/`v_proj` are never touched. The projector is either trained
fully and saved whole in the adapter (PEFT `modules_to_save`; the default for the VLM stages, whose
projector is trainable anyway) or left frozen.

Training keeps our loop unchanged: PEFT injects its layers into our model in place, the loop trains the
same module object, and checkpoints hold its whole state (base weights, adapter, optimizer), so resume is
exact as for full training. At the end RUN/model is the adapter folder: the adapter files, the tokenizer
and `base_model_name_or_path` = the absolute path of the `--from` model folder. `load_model` recognises it
(`chat`, `eval`, `serve --model` work unchanged) and merges the adapter in memory; `minimind-v merge`
writes the merged model as a plain model folder.
"""
from __future__ import annotations

from pathlib import Path

import torch

from ..formats.adapter import attach_adapter, base_of

ATTN = ("q_proj", "k_proj", "v_proj", "o_proj")
MLP = ("gate_proj", "up_proj", "down_proj")
TARGET_SETS = {"all": ATTN + MLP, "attn": ATTN, "mlp": MLP}
PROJECTOR = "vision_proj"


def target_names(spec: str) -> tuple[str, ...]:
    """'all' | 'attn' | 'mlp' | a comma list of q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj."""
    if spec in TARGET_SETS:
        return TARGET_SETS[spec]
    names = tuple(n.strip() for n in spec.split(",") if n.strip())
    bad = [n for n in names if n not in ATTN + MLP]
    if bad or not names:
        raise ValueError(f"--lora-targets {spec!r}: unknown module(s) {bad}; use all, attn, mlp or a comma list of "
                         f"{', '.join(ATTN + MLP)}")
    return names


def target_regex(names: tuple[str, ...]) -> str:
    """Module names of the LLM's linear layers only: model.layers.N.self_attn.X / model.layers.N.mlp[.experts.E].X."""
    attn = [n for n in names if n in ATTN]
    mlp = [n for n in names if n in MLP]
    parts = []
    if attn:
        parts.append(rf"self_attn\.({'|'.join(attn)})")
    if mlp:
        parts.append(rf"mlp\.(experts\.\d+\.)?({'|'.join(mlp)})")
    return rf"model\.layers\.\d+\.({'|'.join(parts)})"


def lora_config(rank: int, alpha: float | None, dropout: float, targets: str, train_projector: bool):
    from peft import LoraConfig
    if rank <= 0:
        raise ValueError(f"--lora-rank must be positive, got {rank}")
    return LoraConfig(r=rank, lora_alpha=alpha if alpha is not None else 2 * rank, lora_dropout=dropout,
                      target_modules=target_regex(target_names(targets)),
                      modules_to_save=[PROJECTOR] if train_projector else None)


def projector_trained(cfg, stage_prefixes: tuple[str, ...]) -> bool:
    """--lora-projector auto: trained when the stage (or --trainable) trains it."""
    if cfg.lora_projector == "auto":
        return any(p.startswith(PROJECTOR) for p in stage_prefixes)
    if cfg.lora_projector not in ("train", "freeze"):
        raise ValueError(f"--lora-projector {cfg.lora_projector!r}: use auto, train or freeze")
    return cfg.lora_projector == "train"


def check_rank(model, rank: int, targets: str) -> None:
    """A LoRA rank above the narrowest adapted layer's width adds parameters and nothing else (the update of
    an in x out layer has rank at most min(in, out)): refused, naming the bound, before any allocation."""
    import re
    pattern = re.compile(target_regex(target_names(targets)))
    widths = [min(m.in_features, m.out_features) for name, m in model.named_modules()
              if isinstance(m, torch.nn.Linear) and pattern.fullmatch(name)]
    if widths and rank > min(widths):
        raise ValueError(f"--lora-rank {rank}: must be at most {min(widths)}, the width of the narrowest adapted "
                         f"layer (--lora-targets {targets})")


def apply_lora(model, cfg, stage_prefixes: tuple[str, ...], log=print):
    """Inject LoRA layers into `model` in place (only they, and the projector when chosen, stay trainable).
    Returns the PeftModel that wraps it (for saving); the loop keeps training `model` itself."""
    from peft import get_peft_model
    if not cfg.init_from:
        raise ValueError("LoRA adapts a trained model: give --from MODEL_DIR (the base the adapter belongs to)")
    if cfg.unfreeze_vision:
        raise ValueError("--lora-rank and --unfreeze-vision do not go together: the adapter holds the LLM's LoRA "
                         "weights and the projector, not the encoder")
    check_rank(model, cfg.lora_rank, cfg.lora_targets)                  # before PEFT allocates anything
    train_proj = projector_trained(cfg, stage_prefixes)
    peft_model = get_peft_model(model, lora_config(cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout,
                                                   cfg.lora_targets, train_proj))
    assert peft_model.base_model.model is model          # injected in place: the loop's module is the same
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    if n == 0:
        raise ValueError(f"--lora-targets {cfg.lora_targets!r} matched no layer of this model")
    log(f"LoRA rank {cfg.lora_rank}, alpha {peft_model.peft_config['default'].lora_alpha}, dropout "
        f"{cfg.lora_dropout}, targets {', '.join(target_names(cfg.lora_targets))}; projector "
        f"{'trained (saved in the adapter)' if train_proj else 'frozen'}")
    return peft_model


def save_adapter(peft_model, out: str | Path, tokenizer, base: str | Path) -> Path:
    """RUN/model as a PEFT adapter folder: adapter files + tokenizer + the base model's absolute path."""
    out = Path(out)
    peft_model.peft_config["default"].base_model_name_or_path = str(Path(base).resolve())
    peft_model.save_pretrained(str(out))
    card = out / "README.md"            # PEFT's empty template card; ours says what the folder is
    card.write_text(f"# LoRA adapter (minimind-v)\n\nBase model: `{Path(base).resolve()}`.\n\n"
                    f"`minimind-v chat --model {out.name}` loads base + adapter; `minimind-v merge {out.name} OUT` "
                    f"writes a plain model folder; on the base's `export --to hf` folder: "
                    f"`PeftModel.from_pretrained(model, \"{out.name}\")`.\n")
    if tokenizer is not None:
        tokenizer.save(out)
    return out


def load_adapter(folder: str | Path, merge: bool = True, vision: bool = True):
    """An adapter folder's base model + the adapter (merged, or the PeftModel with merge=False)."""
    from ..formats.load import load_model
    return attach_adapter(load_model(base_of(folder), vision=vision), folder, merge=merge)


def merge(adapter: str | Path, out: str | Path, dtype: torch.dtype = torch.float32, log=print,
          overwrite: bool = False) -> Path:
    """`minimind-v merge`: adapter folder -> a plain model folder with the LoRA products folded in. OUT may
    not be the adapter or its base (or lie inside / hold them); an existing OUT needs `overwrite`, and is
    replaced only once the merged folder is whole (outputs.py)."""
    from ..formats.folder import save_model
    from ..outputs import check_output, staged_output
    from ..tokenizer import Tokenizer
    base = base_of(adapter)
    check_output(out, (adapter, base), overwrite=overwrite, folder=True)      # before loading anything
    model = load_adapter(adapter, merge=True)
    tok = Tokenizer.load(adapter) if (Path(adapter) / "tokenizer.json").exists() else None
    with staged_output(out, (adapter, base), overwrite=overwrite, folder=True) as stage:
        save_model(model.to(dtype), stage, tok)
    log(f"merged {adapter} into {base}: model folder {out}")
    return Path(out)


# ---------------------------------------------------------------- command line
def add_merge_arguments(m) -> None:
    """The flags of `minimind-v merge` on its (argparse) parser `m`."""
    from ..config import DTYPES
    m.description = ("Loads the base model named in ADAPTER/adapter_config.json, adds the adapter (PEFT), merges "
                     "it and writes OUT as a model folder (chat, eval, serve, export).")
    m.add_argument("adapter", help="adapter folder (RUN/model of a `train --lora-rank` run)")
    m.add_argument("out", help="output model folder")
    m.add_argument("--dtype", default="fp32", choices=list(DTYPES))
    m.add_argument("--overwrite", action="store_true",
                   help="replace an existing OUT (written beside it first, swapped in when whole)")
    m.set_defaults(func=_cmd_merge)


def _cmd_merge(a) -> int:
    from ..config import torch_dtype
    merge(a.adapter, a.out, torch_dtype(a.dtype), overwrite=a.overwrite)
    return 0
