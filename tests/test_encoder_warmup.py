"""The demo's encoder warm-up: a from-scratch SigLIP2 learns to name lone objects and keeps patch places."""
import pytest
import torch

from minimind_v.config import tiny_siglip
from minimind_v.data import synth
from minimind_v.model.vision import VisionEncoder
from minimind_v.train.encoder_warmup import warm_up_encoder


def test_warm_up_learns_colours_and_places():
    torch.manual_seed(0)
    enc = VisionEncoder(tiny_siglip(hidden=64, layers=1, heads=2, image_size=48, patch=16))
    pics, names = synth.lone_objects(200, seed=1, image_size=48)
    colours = [n.split()[0] for n in names]                    # 6 classes: learnable in a few dozen steps
    before = {k: v.clone() for k, v in enc.state_dict().items()}
    res = warm_up_encoder(enc, pics, colours, steps=100, batch_size=32, lr=3e-3, progress=False)
    assert res["classes"] == 6
    assert res["accuracy"] >= 0.8                               # chance is 1/6
    assert res["position_accuracy"] >= 0.3                      # chance is 1/9
    assert any(not torch.equal(before[k], v) for k, v in enc.state_dict().items())


def test_warm_up_refuses_mismatched_labels():
    enc = VisionEncoder(tiny_siglip(hidden=32, layers=1, heads=2, image_size=48, patch=16))
    pics, names = synth.lone_objects(4, image_size=48)
    with pytest.raises(ValueError, match="as many labels"):
        warm_up_encoder(enc, pics, names[:3], steps=1, progress=False)


def test_lone_objects_are_named_by_their_caption():
    pics, names = synth.lone_objects(30, seed=3, image_size=48)
    assert len(pics) == 30 and all(p.size == (48, 48) for p in pics)
    for name in names:
        colour, shape = name.split()
        assert colour in synth.COLOURS and shape in synth.SHAPES
