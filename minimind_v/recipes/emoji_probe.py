"""Where an emoji model's knowledge sits: the frozen encoder's features, probed, next to the trained LLM.

    python -m minimind_v.recipes.emoji_probe OUT [--data DATA_DIR]      (OUT: a finished emoji run)

prints one JSON line. Why it exists: two of the emoji recipe's aims did not move with any change to the
LLM stages (name_yesno, "Does this image show the goat emoji?", and reading an art style never trained
on), and the question each time was whether the picture's information is missing from the encoder or is
there and the LLM does not use it. The probes answer that without training anything large:

- `name_check` (every run): for emoji_val's name_yesno questions, how well two scores separate the "yes"
  from the "no" questions (ROC AUC; 0.5 is chance): the encoder's (how close the picture's mean patch
  feature lies to a training picture of the asked emoji, as a rank among all training pictures) and the
  LLM's (how much the picture raises the likelihood of the caption "The image shows the <asked>." over a
  blank picture), and the LLM's score again on training pictures (own name against another emoji of the
  same kind), where it has seen every picture;
- `style_probe` (runs with `train_style`): a linear probe on the encoder's features of the trained
  style, read on the other style's pictures (category, kind; one picture per emoji family, as
  `other_style_rows`), and whether a picture's nearest neighbour among the trained style's pictures is
  the same emoji (top-1, top-10).
"""
from __future__ import annotations

import argparse
import json
import random
import re
from collections import defaultdict
from dataclasses import fields
from pathlib import Path

import torch
import torch.nn.functional as F

from ..image import blank_image, open_image
from .emoji import TRAIN_FILE, VAL_FILE, EmojiRecipe, _read_rows, emoji_key, other_style_pictures, picture_facts, style_of
from .encoder_warmup import mean_patch_features, twin_search

_NAME_QUESTION = re.compile(r"^(?:Is this|Does this image show) the (.+)\?$")


def auc(pos: list[float], neg: list[float]) -> float:
    """Share of (positive, negative) pairs the score orders right, ties half: ROC AUC."""
    if not pos or not neg:
        return float("nan")
    return sum((p > n) + 0.5 * (p == n) for p in pos for n in neg) / (len(pos) * len(neg))


def encoder_features(encoder, rows: list[dict], batch: int = 256) -> torch.Tensor:
    """(len(rows), width): each row's picture's mean patch feature (`mean_patch_features`)."""
    return mean_patch_features(encoder, [open_image(r["image_bytes"]) for r in rows], batch)


def _caption_gain(vlm, image, names: list[str]) -> list[float]:
    """log p("The image shows the <name>." | picture) - the same with a blank picture, per name."""
    blank = blank_image(vlm.model.cfg.vision.image_size)
    prompt = vlm.prompt_ids([{"role": "user", "content": "Describe this emoji."}], 1)
    gains = []
    for name in names:
        answer = vlm.tok.encode(f"The image shows the {name}.")
        ids = torch.tensor([prompt + answer], device=vlm.device)
        logp = []
        for pic in (image, blank):
            with torch.no_grad():
                logits = vlm.model(ids, pixel_values=vlm.pixels([pic])).logits[0, len(prompt) - 1:-1]
            target = torch.tensor(answer, device=logits.device)[:, None]
            logp.append(logits.float().log_softmax(-1).gather(1, target).sum().item())
        gains.append(logp[0] - logp[1])
    return gains


def name_check(vlm, data_dir: str | Path, train_style: str | None = None, train_pictures: int = 150,
               seed: int = 0) -> dict:
    """The name_yesno ROC AUCs of the module docstring for `vlm` (a pipeline.VLM, the run's OUT/model);
    `train_style`: the run saw that style's pictures only."""
    vlm.model.eval()
    rows = _read_rows(Path(data_dir) / TRAIN_FILE, style=train_style)
    facts = picture_facts(rows)
    val = _read_rows(Path(data_dir) / VAL_FILE, columns=("conversations", "image_bytes", "image_names",
                                                         "answer", "task"))
    questions = []
    for v in val:
        if v["task"] == "name_yesno":
            q = json.loads(v["conversations"])[0]["content"].replace("<image>", "").strip()
            if m := _NAME_QUESTION.match(q):
                questions.append((v, m[1]))
    by_subject = defaultdict(list)
    for i, f in enumerate(facts):
        if "subject" in f:
            by_subject[f["subject"]].append(i)
    train_feats = F.normalize(encoder_features(vlm.model.vision_encoder, rows), dim=-1)
    val_feats = F.normalize(encoder_features(vlm.model.vision_encoder, [v for v, _ in questions]), dim=-1)
    enc, llm = {"yes": [], "no": []}, {"yes": [], "no": []}
    for (v, asked), feat in zip(questions, val_feats):
        sim = train_feats @ feat
        if by_subject.get(asked):            # rank of the asked emoji's best picture; smaller is closer
            enc[v["answer"]].append(-(sim > sim[by_subject[asked]].max()).float().mean().item())
        llm[v["answer"]] += _caption_gain(vlm, open_image(v["image_bytes"]), [asked])
    rng = random.Random(seed)
    by_kind = defaultdict(list)
    for f in facts:
        if "subject" in f and "kind" in f:
            by_kind[f["kind"]].append(f["subject"])
    own, other = [], []
    for i in rng.sample(range(len(rows)), min(train_pictures, len(rows))):
        f = facts[i]
        others = [s for s in by_kind.get(f.get("kind"), []) if s != f.get("subject")]
        if "subject" in f and others:
            gain = _caption_gain(vlm, open_image(rows[i]["image_bytes"]), [f["subject"], rng.choice(others)])
            own.append(gain[0])
            other.append(gain[1])
    return {"name_yesno_n": len(questions), "encoder_auc": round(auc(enc["yes"], enc["no"]), 3),
            "encoder_n": len(enc["yes"]) + len(enc["no"]), "llm_auc": round(auc(llm["yes"], llm["no"]), 3),
            "llm_train_auc": round(auc(own, other), 3), "llm_train_n": len(own)}


def style_probe(encoder, data_dir: str | Path, train_style: str, steps: int = 300, twin_share: float = 1.0) -> dict:
    """The cross-style probes of the module docstring, for an encoder warmed up on `train_style` only
    (`twin_share` < 1: read only the families whose other drawing the warm-up did not pair)."""
    rows = _read_rows(Path(data_dir) / TRAIN_FILE)
    facts = picture_facts(rows)
    feats = encoder_features(encoder, rows)
    seen = [i for i, r in enumerate(rows) if style_of(r["image_names"]) == train_style]
    unseen = other_style_pictures(rows, train_style, twin_share)
    mu, sd = feats[seen].mean(0), feats[seen].std(0) + 1e-6
    out = {"train_style": train_style}
    for task in ("category", "kind"):
        labels = sorted({facts[i][task] for i in seen if task in facts[i]})
        index = {lab: k for k, lab in enumerate(labels)}
        a = [i for i in seen if facts[i].get(task) in index]
        b = [i for i in unseen if facts[i].get(task) in index]
        torch.manual_seed(0)
        probe = torch.nn.Linear(feats.shape[1], len(labels))
        opt = torch.optim.Adam(probe.parameters(), lr=0.01, weight_decay=1e-3)
        xa, ya = (feats[a] - mu) / sd, torch.tensor([index[facts[i][task]] for i in a])
        for _ in range(steps):
            opt.zero_grad()
            F.cross_entropy(probe(xa), ya).backward()
            opt.step()
        with torch.no_grad():
            hit = probe((feats[b] - mu) / sd).argmax(1) == torch.tensor([index[facts[i][task]] for i in b])
        out[task] = round(hit.float().mean().item(), 4)
        out[f"{task}_n"] = len(b)
    seen_by_key = {emoji_key(rows[i]["image_names"]): i for i in seen}     # one drawing per emoji and style
    twins = [-1] * len(rows)
    for i in unseen:
        twins[i] = seen_by_key.get(emoji_key(rows[i]["image_names"]), -1)
    found = twin_search(feats, twins, pool=seen)
    out["identity_top1"] = round(found["top1"], 4)
    out["identity_top10"] = round(found["top10"], 4)
    out["identity_n"] = found["n"]
    out["identity_pool"] = len(seen)                 # chance for the top 10: 10 / identity_pool
    return out


def _recipe(summary: dict) -> EmojiRecipe:
    """The recipe a run's summary.json records (fields a later version added keep their defaults)."""
    known = {f.name for f in fields(EmojiRecipe)}
    return EmojiRecipe(**{k: v for k, v in summary.get("recipe", {}).items() if k in known})


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of `minimind-v emoji probe`."""
    ap.description = __doc__.split("\n")[0]
    ap.add_argument("run", help="a finished emoji run folder (OUT of `minimind-v emoji train`)")
    ap.add_argument("--data", required=True, help="folder holding the emoji parquet files (`minimind-v data emoji`)")
    ap.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1: a tiny model)")
    ap.set_defaults(func=run_args)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="minimind-v emoji probe")
    add_arguments(ap)
    return run_args(ap.parse_args(argv))


def run_args(a: argparse.Namespace) -> int:
    """`minimind-v emoji probe RUN --data DIR`: one JSON line."""
    torch.set_num_threads(a.threads)
    for need in (Path(a.run) / "summary.json", Path(a.run) / "model", Path(a.data) / TRAIN_FILE,
                 Path(a.data) / VAL_FILE):
        if not need.exists():
            raise SystemExit(f"error: {need} not found (want a finished emoji run folder and --data DATA_DIR "
                             "holding the emoji parquet files)")
    from ..pipeline import VLM
    summary = json.loads((Path(a.run) / "summary.json").read_text())
    style = summary.get("recipe", {}).get("train_style")
    vlm = VLM.load(Path(a.run) / "model")
    result = {"run": str(a.run), **name_check(vlm, a.data, style, seed=summary.get("seed", 0))}
    if style:
        result["style_probe"] = style_probe(vlm.model.vision_encoder, a.data, style,
                                            twin_share=_recipe(summary).pair_share())
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
