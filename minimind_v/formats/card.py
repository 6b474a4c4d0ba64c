"""The model card (README.md) of an exported folder: what the model is, how to prompt it, what it was
trained on, and the transformers / pipeline / PEFT lines that use it.

What it was trained on is read, not typed: a model folder written by `minimind-v train` sits at RUN/model
beside RUN/train_config.json (stage, data files, steps) and RUN/summary.json; `init_from` names the
previous stage's model folder, so the chain of stages is followed back (a few links at most). A folder
with no such record (converted weights, a hand-made folder) says so instead of guessing.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch

MAX_STAGES = 6


def training_history(model_dir: str | Path | None) -> list[str]:
    """One line per training stage that led to `model_dir`, oldest first ([] when nothing is recorded)."""
    lines, seen = [], set()
    here = Path(model_dir).resolve() if model_dir else None
    while here is not None and len(lines) < MAX_STAGES and here not in seen:
        seen.add(here)
        run = here.parent
        try:
            cfg = json.loads((run / "train_config.json").read_text())
        except (OSError, ValueError):
            break
        steps = None
        try:
            steps = json.loads((run / "summary.json").read_text()).get("steps")
        except (OSError, ValueError):
            pass
        data = ", ".join(Path(str(d)).name for d in cfg.get("data", [])) or "?"
        what = f"`{cfg.get('stage', '?')}` on {data}"
        if cfg.get("lora_rank"):
            what += f" (LoRA rank {cfg['lora_rank']}, merged)"
        if steps is not None:
            what += f", {steps} optimizer steps"
        what += f" (batch {cfg.get('batch_size', '?')}, lr {cfg.get('lr') or 'stage default'})"
        lines.append(what)
        here = Path(cfg["init_from"]).resolve() if cfg.get("init_from") else None
    return lines[::-1]


def model_card(model, hf: dict, dtype: torch.dtype, history: list[str] | None = None) -> str:
    c = model.cfg
    n_llm_proj = model.num_parameters()
    n_proj = sum(p.numel() for p in model.vision_proj.parameters())
    n_enc = model.num_parameters(include_vision=True) - n_llm_proj
    llm = f"{c.hidden_size} hidden, {c.num_hidden_layers} layers, {c.num_attention_heads} heads / {c.num_key_value_heads} KV heads"
    moe = f", MoE {c.num_experts} experts top-{c.num_experts_per_tok}" if c.use_moe else ""
    family = "SigLIP" if getattr(c.vision, "encoder_class", "siglip2") == "siglip" else "SigLIP2"   # 0420: v1
    enc = (f"{family} ({hf['vision_config']['hidden_size']} wide, patch {hf['vision_config']['patch_size']}, "
           f"frozen)" if hf["vision_config"] else "none (text-only folder)")
    trained = ("\n".join(f"{i + 1}. {line}" for i, line in enumerate(history)) if history else
               "Not recorded: this folder was not exported from a `minimind-v train` run folder (converted or "
               "hand-made weights).")
    return f"""---
library_name: transformers
pipeline_tag: image-text-to-text
tags: [minimind-v, vision-language, custom_code]
---

# MiniMind-V model

A small vision-language model of the MiniMind-V recipe, exported by `minimind-v export --to hf`.

| | |
|---|---|
| LLM | {llm}{moe}, vocab {c.vocab_size} |
| parameters: LLM / projector / encoder | {n_llm_proj - n_proj:,} / {n_proj:,} / {n_enc:,} ({n_llm_proj + n_enc:,} in all) |
| vision encoder | {enc} |
| visual tokens per picture | {c.image_token_len} (`<|image_pad|>`, id {c.image_token_id}) |
| weights | {str(dtype).replace('torch.', '')}, safetensors, lm_head tied to the embedding |

## Trained on

{trained}

## Prompt format

ChatML. Each picture is `{c.image_token_len}` x `<|image_pad|>` where the user wrote `<image>`; the
processor's chat template writes `<image>` followed by a newline for every picture of a message, so
[picture, question] becomes:

```
<|im_start|>user
<|image_pad|>...<|image_pad|>  ({c.image_token_len} of them)
What is in the picture?<|im_end|>
<|im_start|>assistant
```

## Use with transformers

```python
from PIL import Image
from transformers import AutoModelForImageTextToText, AutoProcessor

path = "THIS_FOLDER"
processor = AutoProcessor.from_pretrained(path, trust_remote_code=True)
model = AutoModelForImageTextToText.from_pretrained(path, trust_remote_code=True)
messages = [{{"role": "user", "content": [{{"type": "image", "image": Image.open("picture.png")}},
                                         {{"type": "text", "text": "What is in the picture?"}}]}}]
inputs = processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=True,
                                       return_dict=True, return_tensors="pt")
out = model.generate(**inputs, max_new_tokens=64)
print(processor.decode(out[0, inputs["input_ids"].shape[1]:], skip_special_tokens=True))
```

Several conversations in one call are padded on the left and answer as they do alone; a message may
hold several pictures, or none. Greedy output equals `minimind-v chat --model THIS_FOLDER --greedy`.
The pipeline works too:

```python
from transformers import pipeline
pipe = pipeline("image-text-to-text", model=path, trust_remote_code=True)
pipe(text=messages, max_new_tokens=64, return_full_text=False)   # "image": a PIL image, or "path": a file
```

`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)` loads the same class (for code that
builds the prompt itself and passes `pixel_values` from `AutoImageProcessor`). A LoRA
adapter trained with `minimind-v train --lora-rank R` loads on this folder with
`peft.PeftModel.from_pretrained(model, ADAPTER_DIR)`.

The folder is also a model folder for `minimind-v chat / eval / serve --model THIS_FOLDER`, and
`minimind-v convert THIS_FOLDER OUT` turns it back into a minimind-v training folder. Parameter names are
the original MiniMind-V ones (`model.layers.N...`, `vision_proj.mlp.0...`); the encoder weights are those
of a `Siglip2VisionModel` under `vision_encoder.vision_model.`.
"""
