"""The original MiniMind-V's current ("0420") release and the March 2026 one's NaFlex pixels.

Everything compared here was made by upstream's own code (random weights; see the fixture README in
../shared/fixtures/reference_0420): logits, encoder features, projector outputs and pixels must equal
them to 1e-4, through every form upstream writes (trainer .pth, resume file, its Hugging Face folder).
"""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from conftest import shared_dir
from PIL import Image
from safetensors.torch import load_file

from minimind_v import cli
from minimind_v.convert import convert
from minimind_v.model.folder import load_model
from minimind_v.model.naflex import patches_to_picture, split_naflex
from minimind_v.model.vision import image_to_patches

R = shared_dir() / "fixtures" / "reference_0420"
needs_0420 = pytest.mark.skipif(not R.exists(), reason=f"{R} is absent (a user's clone): the fixtures ship with "
                                                       f"the shared workspace and run in CI")
pytestmark = needs_0420
quiet = dict(log=lambda m: None)
PICS = ("img256", "img320x200")


def fx():
    return load_file(str(R / "fixture_0420.safetensors"))


def picture(name: str) -> Image.Image:
    return Image.open(R / f"{name}.png").convert("RGB")


def check_model(model, f, atol=1e-4):
    """Pixels, encoder features, projector output, logits and argmax for both pictures, and text-only."""
    for name in PICS:
        pix = image_to_patches(picture(name), model.cfg.vision)[None]
        want_pix = f["pixel_lut"][f[f"{name}.pixel_values_u8"].long()]
        assert torch.equal(patches_to_picture(pix, 32), want_pix), name
        with torch.no_grad():
            feats = model.vision_encoder(pix)
            proj = model.project(feats)
            out = model(f["input_ids"], pixel_values=pix)
        torch.testing.assert_close(feats, f[f"{name}.vision_last_hidden_state"], atol=atol, rtol=0)
        torch.testing.assert_close(proj, f[f"{name}.vision_proj"], atol=atol, rtol=0)
        torch.testing.assert_close(out.logits[:, -16:], f[f"{name}.logits_last16"], atol=atol, rtol=0)
        torch.testing.assert_close(out.hidden_states, f[f"{name}.hidden_states"], atol=atol, rtol=0)
        assert torch.equal(out.logits.argmax(-1), f[f"{name}.logits_argmax"]), name
    with torch.no_grad():
        text = model(f["text.input_ids"])
    torch.testing.assert_close(text.logits, f["text.logits"], atol=atol, rtol=0)
    torch.testing.assert_close(text.hidden_states, f["text.hidden_states"], atol=atol, rtol=0)


# ---------------------------------------------------------------- loading the 0420 release exactly

@pytest.mark.parametrize("src", ["tiny_0420.pth", "tiny_0420_hf"])
def test_0420_checkpoint_and_hf_folder_reproduce_upstream(src, tmp_path):
    logs = []
    convert(R / src, tmp_path / "m", vision_encoder=str(R / "tiny_siglip_p32"), log=logs.append)
    model = load_model(tmp_path / "m")
    v = model.cfg.vision
    assert (v.encoder_class, v.resize, v.resample, v.patch_size, model.cfg.merge, model.cfg.projector_norm) == \
        ("siglip", "square", "bicubic", 32, 1, True)
    raw = json.loads((tmp_path / "m" / "config.json").read_text())     # the folder says what it is
    assert raw["vision"]["encoder_class"] == "siglip" and raw["vision"]["resample"] == "bicubic"
    check_model(model, fx())
