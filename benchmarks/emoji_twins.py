"""The emoji recipe's encoder warm-up alone, and how well its features find an emoji across art styles.

    python benchmarks/emoji_twins.py --data DATA_DIR [--seed 0] [--threads 1] [--set FIELD=VALUE ...]

Why: the warm-up is the part of the emoji recipe that decides what a drawing in another style looks like
to the model (docs/emoji.md, "Where the knowledge sits"), and it takes minutes where the whole recipe
takes half an hour; so changes to it (the twin loss, `encoder_twins`) are compared here first. It warms
up an encoder exactly as `minimind-v emoji train` would with the same recipe settings (`--set`, e.g.
`encoder_twins=1 train_style=google`) and prints one JSON line:

- one-style recipes (`train_style`): the emoji probe's `style_probe` on the other style's pictures that
  no part of the run saw (a linear probe for category and kind trained on the seen style, and the twin
  search: is a picture's nearest seen-style drawing the same emoji, top 1 / top 10);
- both styles: the twin search for the validation pictures that have a twin (the same emoji drawn in
  the other style is a training picture), searched among all 4,920 training pictures.
"""
from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", required=True, help="folder holding the emoji parquet files")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="FIELD=VALUE")
    a = ap.parse_args(argv)

    import torch

    from minimind_v.model.vision import VisionEncoder
    from minimind_v.recipes.emoji import (TRAIN_FILE, VAL_FILE, EmojiRecipe, _encoder, _parse_overrides,
                                          _read_rows, picture_facts, twin_index)
    from minimind_v.recipes.emoji_probe import style_probe
    from minimind_v.recipes.encoder_warmup import twin_retrieval
    from minimind_v.image import open_image

    torch.set_num_threads(a.threads)
    torch.manual_seed(a.seed)
    r = EmojiRecipe()
    r = replace(r, **_parse_overrides(r, a.set))
    data = Path(a.data)
    rows = _read_rows(data / TRAIN_FILE, r.train_rows, r.train_style)
    t0 = time.time()
    with tempfile.TemporaryDirectory() as tmp:
        vision, warm = _encoder(r, rows, picture_facts(rows), a.seed, Path(tmp),
                                lambda m: print(m, file=sys.stderr), {}, data)
        cfg = r.model_overrides()["vision"]
        encoder = VisionEncoder(replace(cfg, path=vision["vision_encoder"], siglip=None)).eval()
        seconds = time.time() - t0
        result = {"seed": a.seed, "set": a.set, "warmup_s": round(seconds, 1), "threads": a.threads,
                  "twin_loss_first": warm.get("twin_loss_first"), "twin_loss": warm.get("twin_loss"),
                  "final_loss": warm["loss"]}
        if r.train_style is not None:
            result["style_probe"] = style_probe(encoder, data, r.train_style, twin_share=r.pair_share())
        else:
            val = _read_rows(data / VAL_FILE, columns=("image_bytes", "image_names"))
            seen_val, val_pics = set(), []
            for v in val:                      # emoji_val asks three questions per picture: one each
                if v["image_names"] not in seen_val:
                    seen_val.add(v["image_names"])
                    val_pics.append(v)
            images = [open_image(x["image_bytes"]) for x in rows + val_pics]
            # only the validation pictures ask; a validation emoji is in one style, so its twin is a training row
            twins = [-1] * len(rows) + twin_index(rows + val_pics)[len(rows):]
            result["val_to_train"] = twin_retrieval(encoder, images, twins, pool=list(range(len(rows))))
    print(json.dumps({**result, "recipe": {k: v for k, v in asdict(r).items() if k.startswith(("encoder", "twin"))}}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
