"""Both layouts of a SigLIP vision model, under whichever transformers is installed.

transformers 4.x keeps the layers under `Siglip2VisionModel.vision_model` (names `vision_model.embeddings...`),
5.x holds them directly (`embeddings...`). CI runs this file under both versions (`./run test-compat`); each
test also builds the layout the installed version does NOT make (a thin adapter around the same weights), so a
5.x-only attribute path in the encoder wrapper fails here even with the newest transformers alone.
"""
from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from minimind_v.config import VisionConfig, preset
from minimind_v.formats.load import load_model
from minimind_v.formats.folder import save_model
from minimind_v.model.transformers_compat import NEST, EncoderWeightsMismatch, is_nested
from minimind_v.model.vision import VisionEncoder
from minimind_v.model.vlm import MiniMindVLM

SIGLIP = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, patch_size=4,
              num_patches=16, vision_use_head=False)


def siglip(seed: int = 0):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    torch.manual_seed(seed)
    return Siglip2VisionModel(Siglip2VisionConfig(**SIGLIP)).eval()


class Nested(nn.Module):
    """A flat (5.x) model seen as 4.x builds it: the layers one level down, under `vision_model`."""

    def __init__(self, flat):
        super().__init__()
        self.vision_model, self.config = flat, flat.config

    def forward(self, **kw):
        return self.vision_model(**kw)


class Flat(nn.Module):
    """A nested (4.x) model seen as 5.x builds it: its layers directly on the model."""

    def __init__(self, nested):
        super().__init__()
        object.__setattr__(self, "whole", nested)      # not a child: the parameters appear once, flat
        for name, child in nested.vision_model.named_children():
            self.add_module(name, child)
        self.config = nested.config

    def forward(self, **kw):
        return self.whole(**kw)


def other_layout(model):
    return Flat(model) if is_nested(model) else Nested(model)


def wrapper(model) -> VisionEncoder:
    enc = VisionEncoder(VisionConfig(path=None, siglip=SIGLIP, image_size=16, patch_size=4, hidden_size=32))
    enc.encoder = model
    return enc.eval()


def flat_names(sd: dict) -> dict:
    return {k[len(NEST):] if k.startswith(NEST) else k: v for k, v in sd.items()}


def test_the_adapters_really_make_the_other_layout():
    m = siglip()
    other = other_layout(m)
    assert is_nested(other) != is_nested(m)
    assert any(k.startswith(NEST) for k in m.state_dict()) == is_nested(m)
    assert any(k.startswith(NEST) for k in other.state_dict()) == is_nested(other)


def test_encoder_wrapper_runs_and_names_weights_alike_in_both_layouts():
    m = siglip()
    pix = torch.randn(2, 16, 3 * 16)
    a, b = wrapper(m), wrapper(other_layout(m))
    with torch.no_grad():
        torch.testing.assert_close(a(pix), b(pix), rtol=0, atol=0)
    sa, sb = a.state_dict(), b.state_dict()
    assert list(sa) == list(sb) and "encoder.embeddings.patch_embedding.weight" in sa
    assert not any(NEST in k for k in sa)                       # flat in our files under every version
    # either form loads back into either layout, strictly
    fresh = wrapper(other_layout(siglip(seed=1)))
    nested_form = {("encoder." + NEST + k[len("encoder."):]): v for k, v in sa.items()}
    for form in (sa, nested_form):
        fresh.load_state_dict(form, strict=True)
        with torch.no_grad():
            torch.testing.assert_close(fresh(pix), a(pix), rtol=0, atol=0)


@pytest.mark.parametrize("form", ["nested", "flat"])
def test_encoder_folder_of_either_version_loads_exactly(form, tmp_path):
    """A SigLIP2 folder written by 4.x (nested names) or 5.x (flat names) gives the same encoder."""
    m = siglip()
    m.half().save_pretrained(str(tmp_path / "enc"))           # fp16 on disk, as published folders can be
    m.float()
    f = tmp_path / "enc" / "model.safetensors"
    tensors = flat_names(load_file(str(f)))
    save_file({(NEST + k if form == "nested" else k): v for k, v in tensors.items()}, str(f))
    enc = VisionEncoder(VisionConfig(path=str(tmp_path / "enc"), image_size=16, patch_size=4, hidden_size=32))
    assert next(enc.parameters()).dtype == torch.float32
    got = flat_names(enc.encoder.state_dict())
    assert got.keys() == tensors.keys()
    for k, v in tensors.items():
        assert torch.equal(got[k], v.float()), k


def test_encoder_folder_missing_a_weight_is_refused(tmp_path):
    """Before, a folder whose names did not fit was loaded as random weights with only a warning."""
    siglip().save_pretrained(str(tmp_path / "enc"))
    f = tmp_path / "enc" / "model.safetensors"
    tensors = load_file(str(f))
    gone = next(k for k in tensors if "post_layernorm.weight" in k)
    save_file({k: v for k, v in tensors.items() if k != gone}, str(f))
    with pytest.raises(EncoderWeightsMismatch, match="post_layernorm.weight"):
        VisionEncoder(VisionConfig(path=str(tmp_path / "enc"), image_size=16, patch_size=4, hidden_size=32))


def test_model_folder_moves_between_versions(tmp_path, tiny_tokenizer):
    """Our model.safetensors names a trained-here encoder flat; a file with the nested names loads the same."""
    vcfg = VisionConfig(path=None, siglip=SIGLIP, image_size=16, patch_size=4, hidden_size=32)
    torch.manual_seed(0)
    m = MiniMindVLM(preset("tiny", vocab_size=tiny_tokenizer.vocab_size, vision=vcfg,
                           image_token_id=tiny_tokenizer.image_id)).eval()
    save_model(m, tmp_path / "vlm", tiny_tokenizer)
    f = tmp_path / "vlm" / "model.safetensors"
    sd = load_file(str(f))
    enc_keys = [k for k in sd if k.startswith("vision_encoder.")]
    assert enc_keys and all(k.startswith("vision_encoder.encoder.") and NEST not in k for k in enc_keys)
    pix = torch.randn(1, 16, 3 * 16)
    with torch.no_grad():
        want = m.vision_encoder(pix)
    save_file({(k.replace("vision_encoder.encoder.", "vision_encoder.encoder." + NEST) if k in enc_keys else k): v
               for k, v in sd.items()}, str(f))
    back = load_model(tmp_path / "vlm")
    with torch.no_grad():
        torch.testing.assert_close(back.vision_encoder(pix), want, rtol=0, atol=0)
    assert json.loads((tmp_path / "vlm" / "config.json").read_text())["vision"]["siglip"] is not None
