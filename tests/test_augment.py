"""Picture augmentation: off means untouched, on means a different picture per epoch but the same one for
the same (seed, epoch, row), so a resumed run trains on exactly what an uninterrupted one would."""
from __future__ import annotations

import pytest
import torch
from PIL import Image

from minimind_v.data.augment import augment_image
from minimind_v.data.parquet import VLMDataset
from minimind_v.train.sampler import SeededRows

from conftest import make_tiny_model


def test_strength_zero_is_the_identity_and_size_is_kept():
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    img.paste((200, 0, 0), (8, 8, 24, 24))
    assert augment_image(img, 0.0) is img
    out = augment_image(img, 1.0)
    assert out.size == img.size and out.mode == "RGB"


def test_rows_see_the_same_picture_per_epoch_and_another_next_epoch(tiny_tokenizer, synth_data):
    cfg = make_tiny_model(tiny_tokenizer).cfg
    plain = VLMDataset([synth_data["sft"]], tiny_tokenizer, cfg, 256)
    aug = VLMDataset([synth_data["sft"]], tiny_tokenizer, cfg, 256, augment=1.0)
    base = plain[3].pixel_values
    e0 = SeededRows(aug, seed=7, epoch=0)[3].pixel_values
    again = SeededRows(aug, seed=7, epoch=0)[3].pixel_values
    e1 = SeededRows(aug, seed=7, epoch=1)[3].pixel_values
    assert e0.shape == base.shape
    assert torch.equal(e0, again)
    assert not torch.equal(e0, e1) and not torch.equal(e0, base)
    assert torch.equal(SeededRows(plain, seed=7, epoch=1)[3].pixel_values, base)   # off: untouched
    assert torch.equal(aug[3].input_ids, plain[3].input_ids)                        # text unchanged


def test_training_with_augment_runs_and_refuses_the_encoder_cache(tmp_path, tiny_tokenizer, synth_data):
    from minimind_v.train.loop import TrainConfig, train
    common = dict(stage="vlm-sft", data=[str(synth_data["sft"])], tokenizer=tiny_tokenizer.path, max_steps=2,
                  batch_size=4, progress=False, plot=False, augment=1.0)
    summary = train(TrainConfig(out=str(tmp_path / "run"), **common))
    assert summary["steps"] == 2
    with pytest.raises(ValueError, match="augment"):
        train(TrainConfig(out=str(tmp_path / "run2"), encoder_cache=str(tmp_path / "c"), **common))


def test_restyle_keeps_size_and_hues_and_is_off_at_zero():
    """restyle redraws a picture (flat fills, blur, thicker strokes, lower resolution) without changing its
    size or its colours' hues; strength 0 returns the very picture, strength 1 always changes it."""
    import random
    from PIL import Image, ImageDraw
    from minimind_v.data.augment import restyle
    img = Image.new("RGB", (32, 32), (255, 255, 255))
    d = ImageDraw.Draw(img)
    d.ellipse([4, 4, 27, 27], fill=(220, 30, 30), outline=(40, 40, 40), width=2)
    assert restyle(img, 0.0) is img
    random.seed(0)
    outs = [restyle(img, 1.0) for _ in range(30)]
    assert all(o.size == img.size and o.mode == "RGB" for o in outs)
    assert all(o.tobytes() != img.tobytes() for o in outs)
    assert len({o.tobytes() for o in outs}) >= 4                     # several different redrawings
    for o in outs:                                                    # the disc stays red
        r, g, b = o.getpixel((16, 16))
        assert r > 150 and g < 110 and b < 110, (r, g, b)
