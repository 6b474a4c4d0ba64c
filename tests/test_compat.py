"""Compatibility with the original MiniMind-V: its checkpoints load exactly (`minimind-v convert`), our presets
have its parameter names / shapes / counts, its tokenizer and chat format give its token ids and labels,
and our folders go back to its `.pth` layout.

Many tests read tests/fixtures/reference (produced by the original code, random weights; see its README);
the others build tiny models here.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import REF, TINY_SIGLIP
from safetensors.torch import load_file

from minimind_v import cli
from minimind_v.config import SIGLIP2_B16, ModelConfig, VisionConfig, preset
from minimind_v.formats.convert_export import convert, parameter_counts, to_reference
from minimind_v.formats.fields import original_config
from minimind_v.formats.folder import CheckpointMismatch, save_model, strict_load
from minimind_v.formats.load import load_model
from helpers import pixel_tensor
from minimind_v.model.vlm import MiniMindVLM

quiet = dict(log=lambda m: None)


def fixture():
    return load_file(str(REF / "fixture.safetensors"))


def spans(labels) -> list[list[int]]:
    """Inclusive [start, end] runs of labelled (not -100) positions."""
    out = []
    for i, v in enumerate(labels):
        if v == -100:
            continue
        if out and out[-1][1] == i - 1:
            out[-1][1] = i
        else:
            out.append([i, i])
    return out


def siglip_folder(path: Path, **over) -> Path:
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    torch.manual_seed(1)
    Siglip2VisionModel(Siglip2VisionConfig(**{**TINY_SIGLIP, **over})).save_pretrained(str(path))
    return path


def tiny_cfg(encoder: str | None = "trained", vocab: int = 320, moe: bool = False) -> ModelConfig:
    """64 visual tokens per 64x64 picture (256 patches of 4 px, merged by 4), like the real recipe."""
    vis = VisionConfig(path=None, siglip=TINY_SIGLIP if encoder == "trained" else None, image_size=64,
                       patch_size=4, hidden_size=32)
    return ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=vocab, use_moe=moe, vision=vis)


# ---------------------------------------------------------------- exact logits of the original checkpoints

@pytest.mark.parametrize("kind,src", [("dense", "tiny_dense.safetensors"), ("dense", "tiny_dense.pth"),
                                      ("moe", "tiny_moe.safetensors")])
def test_reference_checkpoints_reproduce_fixture_logits(kind, src, tmp_path):
    convert(REF / src, tmp_path / "m", config=str(REF / f"tiny_{kind}_config.json"), **quiet)
    model = load_model(tmp_path / "m", vision=False)
    fx = fixture()
    with torch.no_grad():
        out = model(fx["input_ids"], vision_features=fx["vision_features"].float(), logits_to_keep=16)
        full = model.lm_head(out.hidden_states)
    torch.testing.assert_close(out.logits, fx[f"{kind}.expected_logits_last16"], atol=1e-4, rtol=0)
    torch.testing.assert_close(out.hidden_states, fx[f"{kind}.expected_hidden_states"], atol=1e-5, rtol=0)
    assert torch.equal(full.argmax(-1), fx[f"{kind}.expected_argmax"])
    if kind == "dense":
        with torch.no_grad():
            text = model(fx["text_input_ids"])
        torch.testing.assert_close(text.logits, fx["dense.text_expected_logits"], atol=1e-4, rtol=0)
        torch.testing.assert_close(text.hidden_states, fx["dense.text_expected_hidden_states"], atol=1e-5, rtol=0)


def test_fp16_checkpoint_converts_to_fp32(tmp_path):
    sd = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
    torch.save({k: v.half() for k, v in sd.items()}, str(tmp_path / "half.pth"))
    logs = []
    convert(tmp_path / "half.pth", tmp_path / "m", config=str(REF / "tiny_dense_config.json"), log=logs.append)
    assert any("float16" in line and "float32" in line for line in logs)
    model = load_model(tmp_path / "m", vision=False)
    assert {p.dtype for p in model.parameters()} == {torch.float32}
    rounded = MiniMindVLM(model.cfg, vision=False).eval()      # the fp16 values, exactly, in fp32
    strict_load(rounded, {k: v.half().float() for k, v in sd.items()})
    ids = fixture()["text_input_ids"]
    with torch.no_grad():
        assert torch.equal(model(ids).logits, rounded(ids).logits)


def test_resume_checkpoint_and_wrapper_prefix(tmp_path):
    """An original `*_resume.pth` ({'model', 'optimizer', ...}) saved from a DDP-wrapped model."""
    sd = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
    torch.save({"model": {"module." + k: v for k, v in sd.items()}, "optimizer": {"state": {}, "param_groups": []},
                "epoch": 1, "step": 10}, str(tmp_path / "sft_resume.pth"))
    logs = []
    convert(tmp_path / "sft_resume.pth", tmp_path / "m", config=str(REF / "tiny_dense_config.json"),
            log=logs.append)
    assert any("resume checkpoint" in line for line in logs) and any("'module.'" in line for line in logs)
    with torch.no_grad():
        logits = load_model(tmp_path / "m", vision=False)(fixture()["text_input_ids"]).logits
    torch.testing.assert_close(logits, fixture()["dense.text_expected_logits"], atol=1e-4, rtol=0)


# ---------------------------------------------------------------- strictness

def _mutations():
    def drop(sd):
        del sd["model.layers.1.mlp.up_proj.weight"]
    def extra(sd):
        sd["model.layers.2.mlp.up_proj.weight"] = torch.zeros(256, 64)
    def reshape(sd):
        sd["model.layers.0.self_attn.k_proj.weight"] = torch.zeros(64, 64)
    def untie(sd):
        sd["lm_head.weight"] = sd["lm_head.weight"] + 1
    return [(drop, r"missing \(1\): model\.layers\.1\.mlp\.up_proj\.weight"),
            (extra, r"unexpected \(1\): model\.layers\.2\.mlp\.up_proj\.weight"),
            (reshape, r"wrong shape \(1\): model\.layers\.0\.self_attn\.k_proj\.weight: file \(64, 64\) vs model "
                      r"\(32, 64\)"),
            (untie, r"lm_head\.weight differs from model\.embed_tokens\.weight")]


@pytest.mark.parametrize("mutate,message", _mutations(), ids=["missing", "unexpected", "shape", "untied"])
def test_strict_conversion_names_the_keys(mutate, message, tmp_path):
    sd = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
    mutate(sd)
    torch.save(sd, str(tmp_path / "bad.pth"))
    with pytest.raises(CheckpointMismatch, match=message):
        convert(tmp_path / "bad.pth", tmp_path / "m", config=str(REF / "tiny_dense_config.json"), **quiet)
    assert not (tmp_path / "m" / "model.safetensors").exists()         # nothing half-written


def test_wrong_config_is_refused_on_the_command_line(tmp_path, capsys):
    """MoE weights with the dense config: the CLI exits 2 and names what does not fit."""
    code = cli.main(["convert", str(REF / "tiny_moe.safetensors"), str(tmp_path / "m"),
                     "--config", str(REF / "tiny_dense_config.json")])
    err = capsys.readouterr().err
    assert code == 2
    assert "missing (6): model.layers.0.mlp.down_proj.weight" in err
    assert "unexpected (26): model.layers.0.mlp.experts.0.down_proj.weight" in err
    (tmp_path / "sft_vlm_64.pth").write_bytes((REF / "tiny_dense.pth").read_bytes())    # no config beside it
    assert cli.main(["convert", str(tmp_path / "sft_vlm_64.pth"), str(tmp_path / "m")]) == 2
    assert "--preset" in capsys.readouterr().err


# ---------------------------------------------------------------- LLM-only checkpoints (llm_768.pth)

def test_llm_only_checkpoint_gets_a_fresh_projector(tmp_path, caplog):
    sd = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
    torch.save({k: v for k, v in sd.items() if not k.startswith("vision_proj.")}, str(tmp_path / "llm_64.pth"))
    logs = []
    convert(tmp_path / "llm_64.pth", tmp_path / "m", config=str(REF / "tiny_dense_config.json"),
            tokenizer=str(REF / "tokenizer"), log=logs.append)
    assert any("freshly initialised" in line for line in logs)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["projector"] == "fresh"
    with caplog.at_level("WARNING", logger="minimind_v"):
        model = load_model(tmp_path / "m")
    assert "freshly initialised" in caplog.text and "no vision encoder" in caplog.text
    with torch.no_grad():           # the LLM is the checkpoint's, exactly
        logits = model(fixture()["text_input_ids"]).logits
    torch.testing.assert_close(logits, fixture()["dense.text_expected_logits"], atol=1e-4, rtol=0)


@pytest.mark.slow
def test_llm_only_checkpoint_then_vlm_pretrain(tmp_path, capsys, caplog):
    """llm.pth (+ llm_config.json beside it) -> convert with an encoder -> `train --stage vlm-pretrain --from`."""
    from minimind_v.datatools.synth import corpus, generate
    from minimind_v.tokenizer import train_tokenizer
    tok = train_tokenizer(corpus(200), vocab_size=320, out=tmp_path / "tok", show_progress=False)
    torch.manual_seed(0)
    llm = MiniMindVLM(tiny_cfg(encoder=None, vocab=tok.vocab_size), vision=False)
    torch.save({k: v for k, v in llm.state_dict().items() if not k.startswith("vision_proj.")},
               str(tmp_path / "llm.pth"))
    (tmp_path / "llm_config.json").write_text(json.dumps(original_config(llm.cfg)))
    siglip_folder(tmp_path / "siglip")
    data = generate(tmp_path / "data", n=8, seed=0, image_size=64, kind="pretrain")["pretrain"]
    assert cli.main(["convert", str(tmp_path / "llm.pth"), str(tmp_path / "m"), "--tokenizer", str(tmp_path / "tok"),
                     "--vision-encoder", str(tmp_path / "siglip")]) == 0
    assert "freshly initialised" in capsys.readouterr().out
    with caplog.at_level("WARNING", logger="minimind_v"):
        assert cli.main(["train", "--stage", "vlm-pretrain", "--data", str(data), "--out", str(tmp_path / "run"),
                         "--from", str(tmp_path / "m"), "--max-steps", "2", "--batch-size", "4", "--no-progress",
                         "--log-every", "1"]) == 0
    assert "freshly initialised" in caplog.text          # the training run says so too (a warning on stderr)
    before, after = load_model(tmp_path / "m"), load_model(tmp_path / "run" / "model")
    assert "projector" not in json.loads((tmp_path / "run" / "model" / "config.json").read_text())
    assert not torch.equal(before.vision_proj.mlp[0].weight, after.vision_proj.mlp[0].weight)     # trained
    assert torch.equal(before.model.layers[1].mlp.up_proj.weight, after.model.layers[1].mlp.up_proj.weight)


# ---------------------------------------------------------------- full-size names, shapes, counts

@pytest.mark.parametrize("name,kind", [("minimind-3v", "dense"), ("minimind-3v-moe", "moe")])
def test_presets_match_the_full_size_manifest(name, kind):
    man = json.loads((REF / "full_size_manifest.json").read_text())[kind]
    with torch.device("meta"):                   # shapes and counts only: no memory, no time
        model = MiniMindVLM(preset(name), vision=False)
    sd = model.state_dict()
    assert list(sd) == man["state_dict_keys_in_order"]          # no renaming at all
    assert {k: list(v.shape) for k, v in sd.items()} == man["state_dict_shapes"]
    counts = parameter_counts(model)
    assert counts["llm"] == man["params_llm_unique(tied embedding counted once)"]
    assert counts["projector"] == man["params_projector"]
    assert counts["llm_plus_projector"] == man["params_llm_plus_projector"]
    if kind == "moe":
        assert counts["active"] == man["params_active_per_token_llm_plus_projector"]
    ours = original_config(preset(name))
    assert {k: ours[k] for k in man["config"]} == man["config"]


def test_siglip2_b16_parameter_counts():
    from transformers import Siglip2VisionConfig, Siglip2VisionModel
    man = json.loads((REF / "full_size_manifest.json").read_text())["vision_encoder"]
    with torch.device("meta"):
        ours = Siglip2VisionModel(Siglip2VisionConfig(**SIGLIP2_B16))             # no pooling head: unused
        google = Siglip2VisionModel(Siglip2VisionConfig(**{**SIGLIP2_B16, "vision_use_head": True}))
    assert sum(p.numel() for p in ours.parameters()) == man["params_without_head"]
    assert sum(p.numel() for p in google.parameters()) == man["params_total"]


# ---------------------------------------------------------------- tokenizer and chat format

def test_original_tokenizer_renders_the_fixture_examples():
    from transformers import AutoTokenizer

    from minimind_v.data.chatml import parse_conversations, render
    from minimind_v.data.collate import Collator
    from minimind_v.data.parquet import Sample
    from minimind_v.tokenizer import Tokenizer
    tok = Tokenizer.load(REF / "tokenizer")
    hf = AutoTokenizer.from_pretrained(str(REF / "tokenizer"))
    ex = json.loads((REF / "chat_examples.json").read_text())
    special = ex["special_tokens"]
    assert (tok.pad_id, tok.bos_id, tok.eos_id, tok.image_id, tok.vocab_size) == \
        (special["pad_token_id"], special["bos_token_id"], special["eos_token_id"], special["<|image_pad|>"],
         special["len(tokenizer)"])
    for example in ex["examples"]:
        msgs = parse_conversations(example["conversations"])
        for variant, think in (("without_empty_think (p=0.8)", False), ("with_empty_think (p=0.2)", True)):
            want = example[variant]
            r = render(msgs, tok, 64, think_block=think)
            assert r.ids == want["input_ids"], (example["name"], variant)
            assert len(r.ids) == want["num_tokens"]
            assert spans(r.labels) == want["label_positions_inclusive_spans"], (example["name"], variant)
            assert all(r.labels[i] == r.ids[i] for a, b in spans(r.labels) for i in range(a, b + 1))
            assert hf(want["prompt"], add_special_tokens=False).input_ids == want["input_ids"]
        # static padding to the SFT length, as the original: id 0, label -100
        r = render(msgs, tok, 64)
        batch = Collator(pad_id=tok.pad_id, mode="max", max_length=768)(
            [Sample(torch.tensor(r.ids), torch.tensor(r.labels), None)])
        n = len(r.ids)
        assert batch.input_ids.shape == (1, 768)
        assert (batch.input_ids[0, n:] == 0).all() and (batch.labels[0, n:] == -100).all()
        assert spans(batch.labels[0].tolist()) == example["without_empty_think (p=0.8)"][
            "label_positions_inclusive_spans"]


# ---------------------------------------------------------------- back to the original layout

def test_reference_layout_round_trip_is_exact(tmp_path):
    """original .pth -> our folder -> original .pth: the same keys and bit-identical tensors."""
    convert(REF / "tiny_dense.pth", tmp_path / "m", config=str(REF / "tiny_dense_config.json"), **quiet)
    assert cli.main(["convert", str(tmp_path / "m"), str(tmp_path / "back.pth"), "--to", "reference"]) == 0
    orig = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
    back = torch.load(str(tmp_path / "back.pth"), weights_only=True)
    assert set(back) == set(orig)                       # (key order of a state dict carries no meaning)
    assert all(torch.equal(back[k], orig[k]) and back[k].dtype == orig[k].dtype for k in orig)
    cfg = json.loads((tmp_path / "back_config.json").read_text())
    ref_cfg = json.loads((REF / "tiny_dense_config.json").read_text())
    assert {k: cfg[k] for k in cfg if k not in ("pad_token_id",)} == \
        {k: ref_cfg[k] for k in cfg if k not in ("pad_token_id",)}


@pytest.mark.parametrize("encoder", ["trained", "folder"])
def test_ours_to_reference_and_back(encoder, tmp_path):
    """A model trained here -> original layout (+ its encoder as a SigLIP2 folder) -> ours: same logits."""
    torch.manual_seed(0)
    cfg = tiny_cfg(encoder="trained" if encoder == "trained" else None, moe=True)
    if encoder == "folder":
        cfg = cfg.replace(vision=dict(cfg.vision.__dict__, path=str(siglip_folder(tmp_path / "siglip"))))
    save_model(MiniMindVLM(cfg).eval(), tmp_path / "ours")
    to_reference(tmp_path / "ours", tmp_path / "out" / "sft_vlm_64_moe.pth", **quiet)
    sd = torch.load(str(tmp_path / "out" / "sft_vlm_64_moe.pth"), weights_only=True)
    assert "lm_head.weight" in sd and torch.equal(sd["lm_head.weight"], sd["model.embed_tokens.weight"])
    assert not any(k.startswith("vision_encoder.") for k in sd)
    assert (tmp_path / "out" / "sft_vlm_64_moe_vision_encoder").exists() == (encoder == "trained")
    enc = [] if encoder == "trained" else ["--vision-encoder", str(tmp_path / "siglip")]
    assert cli.main(["convert", str(tmp_path / "out" / "sft_vlm_64_moe.pth"), str(tmp_path / "again"), *enc]) == 0
    a, b = load_model(tmp_path / "ours"), load_model(tmp_path / "again")
    ids = torch.tensor([[1, 30, 31] + [12] * 64 + [32, 2, 1, 33]])
    from PIL import Image
    pix = pixel_tensor(Image.new("RGB", (64, 64), (200, 30, 30)), a.cfg.vision)[None]
    with torch.no_grad():
        assert torch.equal(a(ids, pixel_values=pix).logits, b(ids, pixel_values=pix).logits)


def test_vision_encoder_pointer_bundle_and_mismatch(tmp_path):
    torch.manual_seed(0)
    model = MiniMindVLM(tiny_cfg(encoder=None), vision=False)
    torch.save(model.state_dict(), str(tmp_path / "sft.pth"))
    (tmp_path / "sft_config.json").write_text(json.dumps(original_config(model.cfg)))
    siglip = siglip_folder(tmp_path / "siglip")
    convert(tmp_path / "sft.pth", tmp_path / "pointer", vision_encoder=str(siglip), **quiet)
    assert json.loads((tmp_path / "pointer" / "config.json").read_text())["vision"]["path"] == str(siglip.resolve())
    convert(tmp_path / "sft.pth", tmp_path / "bundled", vision_encoder=str(siglip), bundle_encoder=True, **quiet)
    assert json.loads((tmp_path / "bundled" / "config.json").read_text())["vision"]["path"] == "vision_encoder"
    (tmp_path / "bundled").rename(tmp_path / "moved")          # a bundled folder is self-contained
    a, b = load_model(tmp_path / "pointer"), load_model(tmp_path / "moved")
    assert a.vision_encoder is not None and a.cfg.vision.image_size == 64
    pix = torch.randn(1, 256, 48)
    ids = torch.tensor([[1] + [12] * 64 + [2]])
    with torch.no_grad():
        assert torch.equal(a(ids, pixel_values=pix).logits, b(ids, pixel_values=pix).logits)
    with pytest.raises(ValueError, match="48 wide but the model's projector expects 32"):
        convert(tmp_path / "sft.pth", tmp_path / "bad", vision_encoder=str(siglip_folder(tmp_path / "wide",
                                                                                          hidden_size=48)), **quiet)
    # a text-only folder gets its encoder later
    convert(tmp_path / "sft.pth", tmp_path / "text", **quiet)
    assert load_model(tmp_path / "text").vision_encoder is None
    convert(tmp_path / "text", tmp_path / "text+enc", vision_encoder=str(siglip), **quiet)
    with torch.no_grad():
        assert torch.equal(load_model(tmp_path / "text+enc")(ids, pixel_values=pix).logits,
                           a(ids, pixel_values=pix).logits)


def test_original_hf_folder_converts_and_loads(tmp_path):
    """The original project's converted HF folder: its config.json + pytorch_model.bin."""
    src = tmp_path / "MiniMind-V-hf"
    src.mkdir()
    (src / "config.json").write_text((REF / "tiny_dense_config.json").read_text())
    sd = torch.load(str(REF / "tiny_dense.pth"), weights_only=True)
    torch.save(sd, str(src / "pytorch_model.bin"))
    for f in ("tokenizer.json", "tokenizer_config.json"):
        (src / f).write_bytes((REF / "tokenizer" / f).read_bytes())
    convert(src, tmp_path / "ours", **quiet)
    fx = fixture()
    for folder in (tmp_path / "ours", src):          # converted, and used as it is
        with torch.no_grad():
            out = load_model(folder)(fx["input_ids"], vision_features=fx["vision_features"].float(),
                                     logits_to_keep=16)
        torch.testing.assert_close(out.logits, fx["dense.expected_logits_last16"], atol=1e-4, rtol=0)
    sd["vision_encoder.vision_model.post_layernorm.weight"] = torch.ones(768)
    torch.save(sd, str(src / "pytorch_model.bin"))
    with pytest.raises(ValueError, match="--vision-encoder"):
        convert(src, tmp_path / "again", **quiet)
