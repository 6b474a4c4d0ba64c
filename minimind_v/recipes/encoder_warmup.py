"""Warm up a from-scratch vision encoder before the VLM stages: every patch says what it shows.

The built-in demo trains its tiny SigLIP2 encoder from nothing, as the stand-in for SigLIP's own
pretraining. Trained only through the LLM's loss it learns to see slowly, and what it learns is spread
over all patches: every visual token ends up describing the whole scene, so the LLM cannot tell which
colour belongs to which shape. So `warm_up_encoder` trains it on scenes whose every patch is labelled
(the demo's layout puts one cell in one patch: its colour and shape, or "none"):

- one linear head per attribute reads each patch's own feature, so each visual token carries its own
  object's colour and shape and nothing else (after 300 steps, a linear probe on the projected visual
  tokens of two demo runs reads shape right on 97.7-97.8% of the object patches, colour on 100%; with
  the earlier lone-object warm-up and the encoder trained on through the captions, shape 90.8-98.5%;
  the demo takes 1000 steps, after which every lookup of seed 0 forms in the caption stage);
- a place head predicts each patch's index from its feature (no annotation needed), so the features
  keep where they are, which the left/right questions need; and the demo also labels each object patch
  with its column ("left", "middle", "right"), one more attribute head: with the place only as a patch
  index, whether the LLM bound a place to the named object was a coin toss per run (left/right 70-100%
  over six runs, 89-100% with the column head: docs/LOG.md, 2026-12-03).

The heads are thrown away afterwards; the encoder keeps what it learned and stays frozen in the VLM
stages, as SigLIP does in the real recipe. (The first design named the lone object of one-object
pictures through the best-scoring patch; with it, whether the LLM's lookups formed depended on the seed:
docs/demo.md.)

`warm_up_encoder_tasks` is the variant for real pictures with several labels each (the emoji recipe:
category, kind and which emoji). The picture's mean patch feature goes through one linear head per
task; a label may be missing (None) for some pictures. With `augment` every picture is drawn a little
differently each time (data/augment.py), from Python's random seeded per step by `seed` (until
2026-12-02 it was not seeded, so two runs of the same seed drew other augmentations and differed).
Labels that the same thing carries in every art style (the emoji's identity) make the features agree
across styles, which is what a picture in an unseen style needs.

`twins` adds a second, label-free objective to that variant: pairs of pictures that show the same thing
drawn differently (the same emoji by two artists). Each step takes half a batch and adds the twin of
every picture that has one; a small projection (thrown away afterwards, as the heads are) maps each
picture's mean patch feature to a unit vector, and a pairwise sigmoid loss, as SigLIP trains pictures
against texts, calls every (picture, twin) pair of the batch a match and every other pair a mismatch.
A class head learns "this is emoji 1f9ab" from both drawings separately; the twin loss asks directly
that the two drawings land next to each other and away from every other emoji in the batch, which is
what a drawing in an unseen style needs. `twin_retrieval` measures it: how often a picture's nearest
neighbour among the other drawings is its twin.
"""
from __future__ import annotations

import math
import random
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from ..hf.pixels import pixel_batch
from ..model.vision import VisionEncoder


def warm_up_encoder(encoder: VisionEncoder, images: list, cells: list[list[tuple[str, ...]]],
                    steps: int = 300, batch_size: int = 32, lr: float = 2e-3, seed: int = 0,
                    position_weight: float = 0.5, empty: str = "none", progress: bool = True) -> dict:
    """Train `encoder` in place to say, from each patch's own feature, what that patch shows.

    `cells[i][p]` holds patch p's labels in picture i, one per attribute (the demo: (colour, shape, column),
    "none" for an empty cell). One linear head per attribute reads every patch feature, plus the place
    head, which predicts each patch's index from its feature (the label is the index itself), so the
    features keep where they are, which the left/right questions need. Returns, for the last batch,
    {"accuracy": share of the patches that show something (a label other than `empty`) with every
    attribute right, "position_accuracy", "seconds", "classes"}."""
    if len(images) != len(cells) or not images:
        raise ValueError("warm_up_encoder needs one label list per picture, and at least one picture")
    t0 = time.time()
    x_all = torch.from_numpy(pixel_batch(images, encoder.vcfg))
    n_patches, width = x_all.shape[1], encoder.vcfg.hidden_size
    if any(len(c) != n_patches for c in cells):
        raise ValueError(f"warm_up_encoder needs one label list per patch ({n_patches} per picture)")
    n_attr = len(cells[0][0])
    classes = [sorted({c[a] for grid in cells for c in grid}) for a in range(n_attr)]
    y_all = torch.tensor([[[classes[a].index(c[a]) for a in range(n_attr)] for c in grid] for grid in cells])
    filled = [cs.index(empty) if empty in cs else -1 for cs in classes]     # the class index of "nothing here"
    heads = nn.ModuleList(nn.Linear(width, len(cs)) for cs in classes)
    place_head = nn.Linear(width, n_patches)
    params = list(encoder.parameters()) + list(heads.parameters()) + list(place_head.parameters())
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    was_training = encoder.training
    encoder.train()
    encoder.requires_grad_(True)
    rng = random.Random(seed)
    places = torch.arange(n_patches)
    it = range(steps)
    if progress:
        from tqdm import tqdm
        it = tqdm(it, desc="encoder warm-up", unit="step")
    acc = place_acc = 0.0
    for _ in it:
        idx = torch.tensor(rng.sample(range(len(images)), min(batch_size, len(images))))
        feats = encoder(x_all[idx])                                # (B, P, width)
        y = y_all[idx]                                             # (B, P, attributes)
        logits = [h(feats) for h in heads]
        place = place_head(feats)
        loss = sum(F.cross_entropy(lg.flatten(0, 1), y[..., a].flatten()) for a, lg in enumerate(logits))
        loss = loss + position_weight * F.cross_entropy(place.flatten(0, 1), places.repeat(len(idx)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        right = torch.stack([lg.argmax(-1) == y[..., a] for a, lg in enumerate(logits)]).all(0)
        shown = torch.stack([y[..., a] != filled[a] for a in range(n_attr)]).any(0)
        acc = right[shown].float().mean().item() if shown.any() else right.float().mean().item()
        place_acc = (place.argmax(-1) == places).float().mean().item()
        if progress:
            it.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
    encoder.train(was_training)
    return {"accuracy": acc, "position_accuracy": place_acc, "seconds": round(time.time() - t0, 1),
            "classes": [len(cs) for cs in classes]}


def warm_up_encoder_tasks(encoder: VisionEncoder, images: list, tasks: dict[str, list], epochs: float = 10,
                          batch_size: int = 64, lr: float = 2e-3, weight_decay: float = 0.01,
                          augment: Callable | None = None, seed: int = 0, progress: bool = True,
                          evaluate: Callable | None = None, eval_every: int = 0, twins: list[int] | None = None,
                          twin_weight: float = 1.0) -> dict:
    """Train `encoder` in place on several labels per picture: tasks maps a name to one label (or None)
    per picture. One linear head per task on the mean patch feature, summed cross-entropies, AdamW with
    a 5% warm-up and cosine decay. `augment(img) -> img` is applied to each picture each time it is drawn.
    `twins[i]` is the index of picture i's twin (the same thing drawn otherwise) or -1: the twin loss of
    the module docstring joins the heads' with weight `twin_weight` (an epoch is then a pass over half
    the pictures as anchors, their twins added to each batch). `evaluate(encoder, heads, classes)` is
    called every `eval_every` epochs and at the end; its dicts are returned under "evals".
    Returns {"loss", "seconds", "steps", "classes", "evals"}, with "twin_loss_first" and "twin_loss"
    (the twin loss's mean over the first and the last 10% of the steps) when `twins` is given."""
    if not images or any(len(v) != len(images) for v in tasks.values()):
        raise ValueError("warm_up_encoder_tasks needs one label (or None) per picture for every task")
    if twins is not None and (len(twins) != len(images) or any(t >= len(images) or t == i
                                                                 for i, t in enumerate(twins))):
        raise ValueError("twins needs one index (or -1) per picture, each another picture's")
    t0 = time.time()
    classes = {name: sorted({lb for lb in labels if lb is not None}) for name, labels in tasks.items()}
    index = {name: {c: i for i, c in enumerate(cs)} for name, cs in classes.items()}
    y = {name: torch.tensor([index[name][lb] if lb is not None else -100 for lb in labels])
         for name, labels in tasks.items()}
    fixed = None if augment else torch.from_numpy(pixel_batch(images, encoder.vcfg))
    width = encoder.vcfg.hidden_size
    heads = nn.ModuleDict({name: nn.Linear(width, len(c)) for name, c in classes.items()})
    twin = _TwinLoss(width) if twins is not None else None
    params = list(encoder.parameters()) + list(heads.parameters())
    if twin is not None:
        params += list(twin.parameters())
    anchors_per_batch = batch_size // 2 if twin else batch_size
    per_epoch = max(1, len(images) // batch_size)
    steps = max(1, round(epochs * per_epoch))
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    warm = max(1, steps // 20)
    sched = torch.optim.lr_scheduler.LambdaLR(
        opt, lambda s: (s + 1) / warm if s < warm else 0.1 + 0.45 * (1 + math.cos(math.pi * (s - warm) / max(1, steps - warm))))
    was_training = encoder.training
    encoder.requires_grad_(True)
    rng = random.Random(seed)
    outer_state = random.getstate()               # the per-step seeding below is undone at the end
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=steps, desc="encoder warm-up", unit="step")
    evals, loss, order, twin_losses = [], torch.zeros(()), [], []
    for step in range(steps):
        encoder.train()
        if len(order) < anchors_per_batch:                # a new pass over the pictures, reshuffled
            order = rng.sample(range(len(images)), len(images))
        idx, order = order[:anchors_per_batch], order[anchors_per_batch:]
        pairs = []
        if twin is not None:                              # each anchor's twin joins the batch
            for a in list(idx):
                t = twins[a]
                if t >= 0:
                    if t not in idx:
                        idx.append(t)
                    pairs.append((idx.index(a), idx.index(t)))
        if fixed is not None:
            x = fixed[idx]
        else:       # augment draws from Python's global random: seeded per step, so a run repeats exactly
            random.seed(seed * 1_000_003 + step)
            x = torch.from_numpy(pixel_batch([augment(images[i]) for i in idx], encoder.vcfg))
        feats = encoder(x).mean(dim=1)
        it = torch.tensor(idx)
        loss = sum(_masked_ce(heads[name](feats), y[name][it]) for name in tasks)
        if pairs:
            t_loss = twin(feats, pairs)
            twin_losses.append(float(t_loss.detach()))
            loss = loss + twin_weight * t_loss
        loss.backward()
        opt.step()
        sched.step()
        opt.zero_grad(set_to_none=True)
        if bar is not None:
            bar.update()
            bar.set_postfix(loss=f"{loss.item():.3f}")
        done = (step + 1) // per_epoch
        if evaluate and ((step + 1) == steps or (eval_every and (step + 1) % (per_epoch * eval_every) == 0)):
            encoder.eval()
            with torch.no_grad():
                evals.append({"epoch": round((step + 1) / per_epoch, 2), **evaluate(encoder, heads, classes)})
            if bar is not None:
                bar.write(f"encoder warm-up, epoch {done}: {evals[-1]}")
    if bar is not None:
        bar.close()
    random.setstate(outer_state)
    encoder.train(was_training)
    out = {"loss": round(float(loss.detach()), 4), "seconds": round(time.time() - t0, 1), "steps": steps,
           "classes": {k: len(v) for k, v in classes.items()}, "evals": evals}
    if twin is not None:
        tenth = max(1, len(twin_losses) // 10)
        out["twin_loss_first"] = round(sum(twin_losses[:tenth]) / tenth, 4) if twin_losses else None
        out["twin_loss"] = round(sum(twin_losses[-tenth:]) / tenth, 4) if twin_losses else None
        out["twin_pairs"] = sum(t >= 0 for t in twins)
    return out


class _TwinLoss(nn.Module):
    """The pairwise sigmoid loss over the (picture, twin) pairs of a batch: a linear projection of the
    mean patch feature to a unit vector, a learned scale and bias (initialised as SigLIP's, 10 and -10, so
    the many mismatched pairs start near their target), and for anchors a_1..a_n with twins t_1..t_n the
    logistic loss of every (a_i, t_j): a match when i == j. Mean over anchors."""

    def __init__(self, width: int, dim: int = 64):
        super().__init__()
        self.proj = nn.Linear(width, dim)
        self.log_scale = nn.Parameter(torch.tensor(math.log(10.0)))
        self.bias = nn.Parameter(torch.tensor(-10.0))

    def forward(self, feats: torch.Tensor, pairs: list[tuple[int, int]]) -> torch.Tensor:
        z = F.normalize(self.proj(feats), dim=-1)
        a, t = z[[p[0] for p in pairs]], z[[p[1] for p in pairs]]
        logits = a @ t.T * self.log_scale.exp() + self.bias
        target = 2 * torch.eye(len(pairs), device=z.device) - 1
        return -F.logsigmoid(target * logits).sum() / len(pairs)


def mean_patch_features(encoder: VisionEncoder, images: list, batch: int = 256) -> torch.Tensor:
    """(len(images), width): each picture's mean patch feature, what the warm-up's heads read, without
    gradients, `batch` pictures at a time."""
    with torch.no_grad():
        return torch.cat([encoder(torch.from_numpy(pixel_batch(images[i:i + batch], encoder.vcfg))).mean(1)
                          for i in range(0, len(images), batch)])


def twin_retrieval(encoder: VisionEncoder, images: list, twins: list[int], pool: list[int] | None = None,
                   batch: int = 256) -> dict:
    """How often a picture's twin is its nearest neighbour (top1) or among its ten nearest (top10), by the
    cosine of the mean patch features, searched among `pool` (default: every picture that is some
    picture's twin), the picture itself left out. Queries are the pictures with a twin (`twins[i] >= 0`;
    one direction suffices). Returns {"top1", "top10", "n", "chance10"}: the emoji probe's search for an
    emoji's drawing in the other style, on any list of pairs."""
    return twin_search(mean_patch_features(encoder, images, batch), twins, pool)


def twin_search(feats: torch.Tensor, twins: list[int], pool: list[int] | None = None) -> dict:
    """`twin_retrieval` on features already computed (one row per picture)."""
    query = [i for i, t in enumerate(twins) if t >= 0]
    if not query:
        raise ValueError("twin_retrieval needs at least one picture with a twin")
    pool = sorted(set(pool) | {twins[i] for i in query}) if pool is not None else sorted({twins[i] for i in query})
    unit = F.normalize(feats, dim=-1)
    sim = unit[query] @ unit[pool].T
    where = {j: k for k, j in enumerate(pool)}
    for row, i in enumerate(query):                       # a picture is not its own neighbour
        if i in where:
            sim[row, where[i]] = -2.0
    top = sim.topk(min(10, len(pool)), dim=1).indices
    hits = [[pool[j] for j in r] for r in top.tolist()]
    return {"top1": sum(h[0] == twins[i] for h, i in zip(hits, query)) / len(query),
            "top10": sum(twins[i] in h for h, i in zip(hits, query)) / len(query),
            "n": len(query), "chance10": min(10, len(pool)) / len(pool)}


def _masked_ce(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the labelled pictures (-100: no label); 0 when a batch has none of this
    task's labels (F.cross_entropy's mean would be 0/0 = NaN there)."""
    valid = (target != -100).sum()
    return F.cross_entropy(logits, target, ignore_index=-100, reduction="sum") / valid.clamp(min=1)
