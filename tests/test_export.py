"""`export --to hf`: plain transformers loads the folder, generates the same greedy tokens as our chat,
keeps the tied embedding through safetensors, and the folder converts back with identical logits.

Logits of the transformers class and ours agree to ~1e-7, not always bit for bit: the same weights at
other addresses can take another SIMD path in a one-row matmul (seen in MoE experts given one token).
Tensors that only travel (export -> import) are compared exactly.

Tiny random models built here (no fixtures needed, except the last test); weights are drawn with std 0.1
so that greedy replies vary from token to token and depend on the picture.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import REF, TINY_SIGLIP
from PIL import Image

from minimind_v import cli
from minimind_v.config import ModelConfig, VisionConfig
from minimind_v.formats.convert_export import convert, export
from minimind_v.formats.load import load_model
from minimind_v.formats.folder import save_model
from minimind_v.model.generate import SamplingParams, generate
from helpers import pixel_tensor
from minimind_v.model.vlm import MiniMindVLM
from minimind_v.pipeline import VLM


@pytest.fixture(scope="module")
def tok(tmp_path_factory):
    from minimind_v.datatools.synth import corpus
    from minimind_v.tokenizer import train_tokenizer
    return train_tokenizer(corpus(200), vocab_size=320, out=tmp_path_factory.mktemp("tok"), show_progress=False)


def tiny_model(tok, moe=False, encoder=True, seed=0, **extra) -> MiniMindVLM:
    """64 visual tokens from a 64x64 picture (256 patches of 4 px, merged 4 at a time), like the real recipe."""
    torch.manual_seed(seed)
    vis = (VisionConfig(path=None, siglip=TINY_SIGLIP, image_size=64, patch_size=4, hidden_size=32) if encoder
           else VisionConfig(path=None, siglip=None, image_size=64, patch_size=4, hidden_size=32))
    cfg = ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      vocab_size=tok.vocab_size, use_moe=moe, vision=vis, **extra)
    model = MiniMindVLM(cfg, vision=encoder).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() > 1 and not name.startswith("vision_encoder."):
                p.normal_(0, 0.3)        # large enough that greedy output varies with the input
    return model


def picture(seed: int, size=(64, 64), mode="RGB") -> Image.Image:
    rng = np.random.default_rng(seed)
    channels = {"RGB": 3, "RGBA": 4}[mode]
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], channels), dtype=np.uint8), mode)


@pytest.fixture(scope="module")
def exported(tok, tmp_path_factory):
    """(our folder, exported folder) of a dense model with a trained-here encoder."""
    root = tmp_path_factory.mktemp("export")
    save_model(tiny_model(tok), root / "ours", tok)
    assert cli.main(["export", "--model", str(root / "ours"), "--to", "hf", str(root / "hf")]) == 0
    return root / "ours", root / "hf"


def hf_load(folder):
    from transformers import AutoImageProcessor, AutoModelForCausalLM, AutoTokenizer
    model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True).eval()
    return (model, AutoTokenizer.from_pretrained(str(folder), trust_remote_code=True),
            AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=True))


def until_eos(ids, eos):
    ids = list(ids)
    return ids[:ids.index(eos)] if eos in ids else ids


def test_folder_layout_and_tied_weights(exported):
    from safetensors import safe_open
    _, hf = exported
    for name in ("config.json", "model.safetensors", "configuration_minimind_v.py", "modeling_minimind_v.py",
                 "image_processing_minimind_v.py", "preprocessor_config.json", "generation_config.json",
                 "tokenizer.json", "tokenizer_config.json", "README.md"):
        assert (hf / name).exists(), name
    with safe_open(str(hf / "model.safetensors"), "pt") as f:
        keys = set(f.keys())
    assert "lm_head.weight" not in keys and "model.embed_tokens.weight" in keys       # stored once
    assert "vision_encoder.vision_model.embeddings.patch_embedding.weight" in keys     # Siglip2's own names
    assert not any(k.startswith("vision_encoder.encoder.") for k in keys)
    assert "AutoModelForCausalLM.from_pretrained" in (hf / "README.md").read_text()


def test_remote_code_needs_no_minimind_v(exported, tmp_path, monkeypatch):
    """The folder works where our package is not installed: block every `import minimind_v`."""
    import shutil
    import sys
    ours, hf = exported
    copy = tmp_path / "standalone_copy"            # a fresh folder name: transformers imports its code anew
    shutil.copytree(hf, copy)
    expected = VLM.load(ours).model(torch.tensor([[1, 20, 21, 22]])).logits
    monkeypatch.setitem(sys.modules, "minimind_v", None)
    model, _, proc = hf_load(copy)
    assert type(model).__module__.startswith("transformers_modules")
    assert proc(images=[picture(0)], return_tensors="pt")["pixel_values"].shape == (1, 256, 48)
    with torch.no_grad():
        torch.testing.assert_close(model(torch.tensor([[1, 20, 21, 22]])).logits, expected, atol=1e-5, rtol=0)


def test_transformers_generation_equals_our_chat(exported, tok):
    ours, hf_dir = exported
    vlm = VLM.load(ours)
    model, hf_tok, proc = hf_load(hf_dir)
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()   # re-tied on load
    image = picture(1, size=(80, 50), mode="RGBA")          # non-square, with alpha: both resize and composite
    pix = proc(images=[image], return_tensors="pt")["pixel_values"]
    assert torch.equal(pix[0], pixel_tensor(image, vlm.model.cfg.vision))

    messages = [{"role": "user", "content": "<image>\nWhat colour is the circle?"}]
    ids = vlm.prompt_ids(messages, 1)
    from minimind_v.data.chatml import render_text
    text, _ = render_text(messages, vlm.model.cfg.image_token_len, add_generation_prompt=True)
    hf_ids = hf_tok(text, return_tensors="pt").input_ids
    assert hf_ids[0].tolist() == ids                         # the exported tokenizer tokenises the same

    ours_tokens = generate(vlm.model, [ids], vlm.params(max_new_tokens=12), vlm.pixels([image]))[0]
    out = model.generate(hf_ids, pixel_values=pix, max_new_tokens=12, do_sample=False)
    hf_tokens = until_eos(out[0, hf_ids.shape[1]:].tolist(), tok.eos_id)
    assert len(set(ours_tokens)) > 2                         # a real sequence, not one token repeated
    assert hf_tokens == ours_tokens
    assert tok.decode(ours_tokens) == hf_tok.decode(hf_tokens, skip_special_tokens=True)
    other = proc(images=[picture(2)], return_tensors="pt")["pixel_values"]
    with torch.no_grad():                                    # the picture matters
        assert not torch.allclose(model(hf_ids, pixel_values=pix).logits, model(hf_ids, pixel_values=other).logits)


def test_left_padded_batch_generation(exported, tok):
    """Two prompts of different lengths in one batch: each gets the reply it gets alone."""
    _, hf_dir = exported
    model, hf_tok, proc = hf_load(hf_dir)
    pads = "<|image_pad|>" * model.config.image_token_len
    texts = [f"<|im_start|>user\n{pads}\nWhat shape is it?<|im_end|>\n<|im_start|>assistant\n",
             f"<|im_start|>user\nHow many shapes are there in this picture, and which colours?\n{pads}"
             f"<|im_end|>\n<|im_start|>assistant\n"]
    images = [picture(3), picture(4)]
    alone = []
    for text, im in zip(texts, images):
        ids = hf_tok(text, return_tensors="pt").input_ids
        out = model.generate(ids, pixel_values=proc(images=[im], return_tensors="pt")["pixel_values"],
                             max_new_tokens=8, do_sample=False)
        alone.append(until_eos(out[0, ids.shape[1]:].tolist(), tok.eos_id))
    hf_tok.padding_side = "left"
    batch = hf_tok(texts, return_tensors="pt", padding=True)
    assert (batch.attention_mask == 0).any()
    out = model.generate(**batch, pixel_values=proc(images=images, return_tensors="pt")["pixel_values"],
                         max_new_tokens=8, do_sample=False)
    together = [until_eos(row[batch.input_ids.shape[1]:].tolist(), tok.eos_id) for row in out]
    assert together == alone


def test_safetensors_save_pretrained_round_trip(exported, tmp_path):
    """The original needed safe_serialization=False for its tied embedding; here the default works."""
    _, hf_dir = exported
    model, _, _ = hf_load(hf_dir)
    model.save_pretrained(str(tmp_path / "again"))            # safetensors by default
    assert (tmp_path / "again" / "model.safetensors").exists()
    from transformers import AutoModelForCausalLM
    again = AutoModelForCausalLM.from_pretrained(str(tmp_path / "again"), trust_remote_code=True).eval()
    assert again.lm_head.weight.data_ptr() == again.model.embed_tokens.weight.data_ptr()
    ids = torch.tensor([[1, 40, 41, 42, 2, 1, 43]])
    with torch.no_grad():
        assert torch.equal(model(ids).logits, again(ids).logits)
        # and what transformers itself wrote is still a folder we load
        torch.testing.assert_close(load_model(tmp_path / "again")(ids).logits, model(ids).logits, atol=1e-5, rtol=0)


def test_import_back_gives_identical_logits(exported, tmp_path):
    ours, hf_dir = exported
    back = convert(hf_dir, tmp_path / "back", log=lambda m: None)
    assert (back / "vision_encoder" / "config.json").exists()      # the encoder became its own folder
    a, b, c = load_model(ours), load_model(back), load_model(hf_dir)   # c: the exported folder used directly
    ids = torch.tensor([[1, 30, 31] + [12] * 64 + [32, 2, 1, 33]])
    pix = pixel_tensor(picture(5), a.cfg.vision)[None]
    with torch.no_grad():
        ref = a(ids, pixel_values=pix).logits
        assert torch.equal(b(ids, pixel_values=pix).logits, ref)
        assert torch.equal(c(ids, pixel_values=pix).logits, ref)


def test_chat_and_eval_accept_an_exported_folder(exported, tmp_path, capsys):
    from minimind_v.datatools.synth import generate as synth
    ours, hf_dir = exported
    image = picture(6)
    image.save(tmp_path / "x.png")
    expected = VLM.load(ours).answer("Describe the picture.", [image], temperature=0, max_new_tokens=10)
    assert cli.main(["chat", "--model", str(hf_dir), "--image", str(tmp_path / "x.png"), "--prompt",
                     "Describe the picture.", "--greedy", "--max-new-tokens", "10"]) == 0
    assert capsys.readouterr().out.strip() == expected.strip()
    data = synth(tmp_path / "data", n=4, seed=0, image_size=64, kind="eval")["eval"]
    assert cli.main(["eval", "--model", str(hf_dir), "--data", str(data), "--limit", "4",
                     "--max-new-tokens", "4"]) == 0
    assert "n = 4" in capsys.readouterr().out


def test_moe_and_text_only_exports(tok, tmp_path):
    from transformers import AutoModelForCausalLM
    ids = torch.tensor([[1, 50, 51, 52, 2, 1, 53, 54]])
    for name, model in (("moe", tiny_model(tok, moe=True, seed=1)), ("text", tiny_model(tok, encoder=False))):
        save_model(model, tmp_path / name, tok)
        export(tmp_path / name, tmp_path / f"{name}-hf", to="hf", log=lambda m: None)
        hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / f"{name}-hf"), trust_remote_code=True).eval()
        assert (hf.vision_encoder is None) == (name == "text")
        with torch.no_grad():
            torch.testing.assert_close(hf(ids).logits, model(ids).logits, atol=1e-5, rtol=0)
        ours = generate(model, [ids[0].tolist()], SamplingParams(max_new_tokens=6))[0]
        out = hf.generate(ids, max_new_tokens=6, do_sample=False)[0, ids.shape[1]:].tolist()
        assert out == ours, name


def test_visual_place_embedding_exports_and_comes_back(tok, tmp_path):
    """The demo's models add a learned vector per visual-token place: transformers (remote code) gives the
    same logits, the folder imports back identically, and the original's format is refused with a reason."""
    from transformers import AutoModelForCausalLM
    model = tiny_model(tok, seed=2, visual_pos_embed=True)
    with torch.no_grad():
        model.vision_proj.pos_embed.normal_(0, 0.5)
    save_model(model, tmp_path / "ours", tok)
    export(tmp_path / "ours", tmp_path / "hf", to="hf", log=lambda m: None)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True).eval()
    ids = torch.tensor([[1, 30, 31] + [12] * 64 + [32, 2]])
    pix = pixel_tensor(picture(7), model.cfg.vision)[None]
    with torch.no_grad():
        ref = model(ids, pixel_values=pix).logits
        without = model(ids, pixel_values=pix, visual_tokens=model.vision_proj.mlp(
            model.vision_encoder(pix).reshape(1, 64, -1))).logits
        assert not torch.allclose(ref, without)                       # the place vectors do change the output
        torch.testing.assert_close(hf(input_ids=ids, pixel_values=pix).logits, ref, atol=1e-5, rtol=0)
        assert torch.equal(load_model(tmp_path / "hf")(ids, pixel_values=pix).logits, ref)
    with pytest.raises(ValueError, match="visual_pos_embed"):
        convert(tmp_path / "ours", tmp_path / "ref.pth", to="reference", log=lambda m: None)


def test_bf16_export_is_smaller_and_close(exported, tmp_path):
    ours, _ = exported
    export(ours, tmp_path / "bf16", to="hf", dtype=torch.bfloat16, log=lambda m: None)
    from safetensors import safe_open
    with safe_open(str(tmp_path / "bf16" / "model.safetensors"), "pt") as f:
        assert f.get_tensor("model.embed_tokens.weight").dtype == torch.bfloat16
    a, b = load_model(ours), load_model(tmp_path / "bf16")         # read back as fp32
    ids = torch.tensor([[1, 60, 61, 62]])
    with torch.no_grad():
        la, lb = a(ids).logits, b(ids).logits
        assert (la - lb).abs().max() <= 0.03 * la.abs().max()       # bf16 keeps ~3 significant digits


def test_reference_checkpoint_through_transformers(tmp_path):
    """Original weights -> ours -> transformers: the fixture's text logits, within 1e-4."""
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM
    convert(REF / "tiny_dense.pth", tmp_path / "ours", config=str(REF / "tiny_dense_config.json"),
            tokenizer=str(REF / "tokenizer"), log=lambda m: None)
    export(tmp_path / "ours", tmp_path / "hf", to="hf", log=lambda m: None)
    hf = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True).eval()
    fx = load_file(str(REF / "fixture.safetensors"))
    with torch.no_grad():
        logits = hf(fx["text_input_ids"]).logits
    torch.testing.assert_close(logits, fx["dense.text_expected_logits"], atol=1e-4, rtol=0)


def test_serve_accepts_an_exported_folder(exported):
    pytest.importorskip("fastapi")
    serve = pytest.importorskip("minimind_v.serve")
    from fastapi.testclient import TestClient
    ours, hf_dir = exported
    expected = VLM.load(ours).answer("Describe the picture.", temperature=0, max_new_tokens=8)
    with TestClient(serve.create_app(VLM.load(hf_dir))) as client:
        r = client.post("/v1/chat/completions", json={
            "model": hf_dir.name, "messages": [{"role": "user", "content": "Describe the picture."}],
            "temperature": 0, "max_tokens": 8})
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["content"] == expected
