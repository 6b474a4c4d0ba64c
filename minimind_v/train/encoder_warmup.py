"""Warm up a from-scratch vision encoder before the VLM stages: name the lone object in a picture.

The built-in demo trains its tiny SigLIP2 encoder from nothing. Trained only through the LLM's loss it
learns to see slowly, and what it learns is spread over all patches: every visual token ends up
describing the whole scene, so the LLM cannot tell which colour belongs to which shape. This stage is
the demo's stand-in for SigLIP's own pretraining, on pictures that hold one object each, labelled with
that picture's short caption ("red circle"):

- each patch feature is scored against every label by a linear head, and a picture's score for a
  label is the best patch's score (multiple-instance learning). Only the object's own patch has to
  carry its name, so features stay local;
- a second linear head predicts each patch's place in the grid from its feature (the label is the
  patch index itself: no annotation needed), so the features keep where they are, which the
  left/right questions need.

Both heads are thrown away afterwards; the encoder keeps what it learned. `warm_up_encoder` works on
any `VisionEncoder` and any list of (picture, label) pairs.
"""
from __future__ import annotations

import random
import time

import torch
import torch.nn.functional as F
from torch import nn

from ..model.vision import VisionEncoder, image_to_patches


def warm_up_encoder(encoder: VisionEncoder, images: list, labels: list[str], steps: int = 300,
                    batch_size: int = 32, lr: float = 2e-3, seed: int = 0, position_weight: float = 0.5,
                    progress: bool = True) -> dict:
    """Train `encoder` in place for `steps` steps; returns {"accuracy", "position_accuracy", "seconds"}
    measured on the last batch."""
    if len(images) != len(labels) or not images:
        raise ValueError("warm_up_encoder needs as many labels as pictures, and at least one picture")
    t0 = time.time()
    classes = sorted(set(labels))
    y_all = torch.tensor([classes.index(lb) for lb in labels])
    x_all = torch.stack([image_to_patches(im, encoder.vcfg) for im in images])
    n_patches, width = x_all.shape[1], encoder.vcfg.hidden_size
    name_head, place_head = nn.Linear(width, len(classes)), nn.Linear(width, n_patches)
    params = list(encoder.parameters()) + list(name_head.parameters()) + list(place_head.parameters())
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
        feats = encoder(x_all[idx])                               # (B, P, width)
        scores = name_head(feats).amax(dim=1)                     # best patch per label: (B, classes)
        place = place_head(feats)                                 # (B, P, P)
        loss = F.cross_entropy(scores, y_all[idx])
        loss = loss + position_weight * F.cross_entropy(place.flatten(0, 1), places.repeat(len(idx)))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        acc = (scores.argmax(-1) == y_all[idx]).float().mean().item()
        place_acc = (place.argmax(-1) == places).float().mean().item()
        if progress:
            it.set_postfix(loss=f"{loss.item():.3f}", acc=f"{acc:.2f}")
    encoder.train(was_training)
    return {"accuracy": acc, "position_accuracy": place_acc, "seconds": round(time.time() - t0, 1),
            "classes": len(classes)}
