"""The model: shapes, causal masking, image splicing, save/load, strict loading, the SigLIP2 path."""
from __future__ import annotations

import pytest
import torch

from minimind_v.config import VisionConfig, preset
from minimind_v.formats.folder import CheckpointMismatch, save_model, strict_load
from minimind_v.formats.load import load_model
from minimind_v.model.vlm import MiniMindVLM

from conftest import make_tiny_model


def test_forward_shapes_and_causal_mask(tiny_model):
    ids = torch.randint(20, 300, (2, 12))
    out = tiny_model(ids)
    assert out.logits.shape == (2, 12, tiny_model.cfg.vocab_size)
    changed = ids.clone()
    changed[:, 8:] = 21                       # future tokens must not change earlier logits
    out2 = tiny_model(changed)
    torch.testing.assert_close(out.logits[:, :8], out2.logits[:, :8])
    assert not torch.allclose(out.logits[:, 8:], out2.logits[:, 8:])


def test_gqa_and_derived_sizes():
    cfg = preset("minimind-3v")
    assert (cfg.head_dim, cfg.intermediate_size, cfg.image_token_len) == (96, 2432, 64)
    assert preset("tiny", hidden_size=256).head_dim == 64        # derived values follow overrides


def _count_pads(ids, image_id):
    return int((ids == image_id).sum())


def test_splice_puts_features_in_order_multi_image_and_text_rows(tiny_model):
    m, L, img = tiny_model, tiny_model.cfg.image_token_len, tiny_model.cfg.image_token_id
    # row 0: two images back to back (one run of 2L placeholders); row 1: text only; row 2: one image
    row0 = [5] + [img] * (2 * L) + [6, 7]
    row1 = [5, 6, 7, 8] + [0] * (len(row0) - 4)
    row2 = [5, 6] + [img] * L + [0] * (len(row0) - 2 - L)
    ids = torch.tensor([row0, row1, row2])
    visual = torch.randn(3, L, m.cfg.hidden_size)            # images in order: row0 a, row0 b, row2
    h = m.embed(ids, visual_tokens=visual, check=True)
    torch.testing.assert_close(h[0, 1:1 + L], visual[0])
    torch.testing.assert_close(h[0, 1 + L:1 + 2 * L], visual[1])
    torch.testing.assert_close(h[2, 2:2 + L], visual[2])
    torch.testing.assert_close(h[1], m.model.embed_tokens(ids[1]))   # text row untouched
    with pytest.raises(ValueError, match="image-token positions"):
        m.embed(ids, visual_tokens=visual[:2], check=True)


def test_text_only_batch_never_calls_encoder(tiny_model, monkeypatch):
    def boom(*a, **k):
        raise AssertionError("encoder called for a text-only batch")
    monkeypatch.setattr(tiny_model.vision_encoder, "forward", boom)
    tiny_model(torch.randint(20, 300, (2, 6)), pixel_values=None)


def test_pixels_go_through_encoder_and_projector(tiny_model):
    n = tiny_model.cfg.vision.num_patches
    pix = torch.randn(2, n, 3 * tiny_model.cfg.vision.patch_size ** 2)
    vis = tiny_model.encode_images(pix)
    assert vis.shape == (2, tiny_model.cfg.image_token_len, tiny_model.cfg.hidden_size)


def test_save_load_identical_logits(tiny_tokenizer, tmp_path):
    m = make_tiny_model(tiny_tokenizer, seed=3)
    save_model(m, tmp_path / "m", tiny_tokenizer)
    m2 = load_model(tmp_path / "m")
    L = m.cfg.image_token_len
    ids = torch.randint(20, 300, (1, L + 6))
    ids[0, 2:2 + L] = m.cfg.image_token_id
    pix = torch.randn(1, m.cfg.vision.num_patches, 3 * m.cfg.vision.patch_size ** 2)
    torch.testing.assert_close(m(ids, pixel_values=pix).logits, m2(ids, pixel_values=pix).logits, rtol=0, atol=0)
    assert (tmp_path / "m" / "tokenizer.json").exists()


def test_strict_load_names_missing_and_unexpected_keys(tiny_model):
    sd = dict(tiny_model.state_dict())
    del sd["model.layers.1.mlp.up_proj.weight"]
    sd["model.layers.9.extra.weight"] = torch.zeros(3)
    sd["model.norm.weight"] = torch.zeros(7)
    with pytest.raises(CheckpointMismatch) as e:
        strict_load(tiny_model, sd)
    msg = str(e.value)
    assert "model.layers.1.mlp.up_proj.weight" in msg and "model.layers.9.extra.weight" in msg
    assert "model.norm.weight" in msg and "wrong shape" in msg


def test_tiny_siglip2_folder_loads_through_user_path(tmp_path, tiny_tokenizer):
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    enc_cfg = Siglip2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1, num_attention_heads=2,
                                  patch_size=8, num_patches=16)
    torch.manual_seed(0)
    ref = Siglip2VisionModel(enc_cfg)
    ref.half().save_pretrained(tmp_path / "siglip")       # fp16 on disk, as some published folders are
    vcfg = VisionConfig(path=str(tmp_path / "siglip"), image_size=32, patch_size=8, hidden_size=64)
    cfg = preset("tiny", vocab_size=tiny_tokenizer.vocab_size, vision=vcfg)
    m = MiniMindVLM(cfg)
    enc = m.vision_encoder.encoder
    assert next(enc.parameters()).dtype == torch.float32           # loaded as fp32, not fp16
    assert not any(p.requires_grad for p in enc.parameters())      # frozen as a module
    m.train()
    assert not enc.training                                        # and kept in eval mode
    pix = torch.randn(1, 16, 3 * 64)
    expected = ref.float()(pixel_values=pix, pixel_attention_mask=torch.ones(1, 16, dtype=torch.long),
                           spatial_shapes=torch.tensor([[4, 4]])).last_hidden_state
    torch.testing.assert_close(m.vision_encoder(pix), expected)
    # the model folder keeps a pointer to the encoder and reloads it
    save_model(m, tmp_path / "vlm", tiny_tokenizer)
    m2 = load_model(tmp_path / "vlm")
    torch.testing.assert_close(m2.vision_encoder(pix), expected)



def test_unfrozen_pretrained_encoder_is_saved_with_the_model(tmp_path, tiny_tokenizer):
    """A SigLIP2 folder trained further (unfreeze_vision) must not be saved as a pointer to the old weights."""
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    Siglip2VisionModel(Siglip2VisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=1,
                                           num_attention_heads=2, patch_size=8, num_patches=16)
                       ).save_pretrained(tmp_path / "siglip")
    vcfg = VisionConfig(path=str(tmp_path / "siglip"), image_size=32, patch_size=8, hidden_size=64)
    m = MiniMindVLM(preset("tiny", vocab_size=tiny_tokenizer.vocab_size, vision=vcfg))
    m.set_vision_trainable(True)
    with torch.no_grad():                                     # stands for training steps on the encoder
        for p in m.vision_encoder.parameters():
            p.add_(0.01)
    save_model(m, tmp_path / "vlm", tiny_tokenizer)
    assert (tmp_path / "vlm" / "vision_encoder" / "config.json").exists()
    m2 = load_model(tmp_path / "vlm")
    pix = torch.randn(1, 16, 3 * 64)
    torch.testing.assert_close(m2.vision_encoder(pix), m.vision_encoder(pix), rtol=0, atol=0)
    saved = m2.vision_encoder.encoder.state_dict()
    original = Siglip2VisionModel.from_pretrained(str(tmp_path / "siglip")).state_dict()
    assert any(not torch.equal(saved[k], original[k]) for k in original)

def test_patches_match_siglip2_image_processor():
    import numpy as np
    from PIL import Image
    from transformers import Siglip2ImageProcessor
    from helpers import pixel_tensor
    rng = np.random.default_rng(0)
    img = Image.fromarray(rng.integers(0, 255, (40, 40, 3), dtype=np.uint8))
    vcfg = VisionConfig(image_size=32, patch_size=8, hidden_size=64)
    proc = Siglip2ImageProcessor(patch_size=8, max_num_patches=16)
    ref = proc(images=[img], return_tensors="pt")
    assert ref["spatial_shapes"].tolist() == [[4, 4]]
    ours = pixel_tensor(img, vcfg)
    torch.testing.assert_close(ours, ref["pixel_values"][0, :16].float(), atol=2e-2, rtol=0)


def test_image_modes_convert_to_rgb():
    from PIL import Image
    from minimind_v.image import to_rgb
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))          # fully transparent -> white
    assert to_rgb(rgba).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("CMYK", (4, 4), (0, 255, 255, 0))).getpixel((0, 0)) == (255, 0, 0)
    assert to_rgb(Image.new("1", (4, 4), 1)).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("I;16", (4, 4), 65535)).getpixel((0, 0)) == (255, 255, 255)
    p = Image.new("P", (4, 4), 0)
    p.putpalette([0, 0, 255] * 256)
    p.info["transparency"] = 0
    assert to_rgb(p).getpixel((0, 0)) == (255, 255, 255)
    assert to_rgb(Image.new("LA", (4, 4), (0, 255))).getpixel((0, 0)) == (0, 0, 0)


def test_moe_builds_and_reports_aux_loss(tiny_tokenizer):
    m = make_tiny_model(tiny_tokenizer, use_moe=True).train()
    ids = torch.randint(20, 300, (2, 8))
    labels = ids.clone()
    out = m(ids, labels=labels)
    assert out.aux_loss is not None and out.aux_loss.item() > 0
    (out.loss + out.aux_loss).backward()
    assert m.model.layers[0].mlp.gate.weight.grad is not None


def test_moe_matches_per_token_experts_and_keeps_idle_experts_in_the_graph():
    """The sorted dispatch equals running each token through its top-k experts one by one; an expert
    that gets no token still receives a (zero) gradient, as DDP expects of every parameter."""
    from minimind_v.config import ModelConfig
    from minimind_v.model.llm import MoEFeedForward

    torch.manual_seed(0)
    cfg = ModelConfig(hidden_size=16, intermediate_size=32, moe_intermediate_size=24, num_experts=4,
                      num_experts_per_tok=2, use_moe=True)
    moe = MoEFeedForward(cfg).train()
    x = torch.randn(2, 5, 16, requires_grad=True)
    y = moe(x)
    probs = torch.softmax(moe.gate(x.reshape(-1, 16)), -1)
    w, idx = probs.topk(2, -1)
    w = w / w.sum(-1, keepdim=True)
    want = torch.stack([sum(w[t, j] * moe.experts[int(idx[t, j])](x.reshape(-1, 16)[t]) for j in range(2))
                        for t in range(10)])
    torch.testing.assert_close(y.reshape(-1, 16), want, rtol=1e-5, atol=1e-6)

    with torch.no_grad():   # route every token to expert 0 (and 1, its second choice): 2 and 3 idle
        moe.gate.weight.zero_()
        moe.gate.weight[0] = 5.0
        moe.gate.weight[1] = 4.0
    x = torch.ones(1, 3, 16)
    moe(x).sum().backward()
    for e in (2, 3):
        g = moe.experts[e].up_proj.weight.grad
        assert g is not None and torch.count_nonzero(g) == 0
    assert torch.count_nonzero(moe.experts[0].up_proj.weight.grad) > 0
