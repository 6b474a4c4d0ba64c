"""The original MiniMind-V's current ("0420") release and the March 2026 one's NaFlex pixels.

Everything compared here was made by upstream's own code (random weights; see the fixture README in
tests/fixtures/reference_0420): logits, encoder features, projector outputs and pixels must equal
them to 1e-4, through every form upstream writes (trainer .pth, resume file, its Hugging Face folder).
"""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from conftest import REF_0420
from helpers import pixel_tensor
from PIL import Image
from safetensors.torch import load_file

from minimind_v import cli
from minimind_v.formats.convert_export import convert
from minimind_v.formats.load import load_model
from minimind_v.model.siglip import patches_to_picture, split_naflex
from minimind_v.model.vlm import MiniMindVLM

R = REF_0420
quiet = dict(log=lambda m: None)
PICS = ("img256", "img320x200")


def fx():
    return load_file(str(R / "fixture_0420.safetensors"))


def picture(name: str) -> Image.Image:
    return Image.open(R / f"{name}.png").convert("RGB")


def check_model(model, f, atol=1e-4):
    """Pixels, encoder features, projector output, logits and argmax for both pictures, and text-only."""
    for name in PICS:
        pix = pixel_tensor(picture(name), model.cfg.vision)[None]
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
    f = fx()
    check_model(model, f)
    from minimind_v.model.generate import SamplingParams, generate     # greedy, with the KV cache
    pix = pixel_tensor(picture("img320x200"), model.cfg.vision)[None]
    ids = generate(model, [f["input_ids"][0].tolist()], SamplingParams(max_new_tokens=8), pixel_values=pix)
    assert ids == f["img320x200.greedy_ids"].tolist()
    assert generate(model, [f["text.input_ids"][0].tolist()], SamplingParams(max_new_tokens=8)) == \
        f["text.greedy_ids"].tolist()


def test_0420_resume_file_and_fp16_trainer_file(tmp_path):
    """A resume file ({'model', 'optimizer', ...}) carrying the frozen encoder: set aside with a message."""
    sd = torch.load(str(R / "tiny_0420.pth"), weights_only=True)
    assert {v.dtype for v in sd.values()} == {torch.float16}
    enc = load_file(str(R / "tiny_siglip_p32" / "model.safetensors"))
    model_sd = dict(sd, **{"vision_encoder." + k: v for k, v in enc.items()})
    torch.save({"model": model_sd, "optimizer": {"state": {}, "param_groups": []}, "epoch": 0, "step": 3,
                "world_size": 1, "wandb_id": None}, str(tmp_path / "sft_vlm_64_resume.pth"))
    logs = []
    convert(tmp_path / "sft_vlm_64_resume.pth", tmp_path / "m", config=str(R / "tiny_0420_config.json"),
            vision_encoder=str(R / "tiny_siglip_p32"), log=logs.append)
    assert any("set aside" in line and f"{len(enc)} vision_encoder" in line for line in logs)
    assert any("0420" in line and "projector keys" in line for line in logs)
    check_model(load_model(tmp_path / "m"), fx())


def naflex_model(tmp_path):
    """The March 2026 (e51dcf0) tiny model of the NaFlex fixture: 0420's LLM + the e51dcf0 projector."""
    sd = torch.load(str(R / "tiny_0420.pth"), weights_only=True)
    sd = {k: v for k, v in sd.items() if not k.startswith("vision_proj.")}
    sd.update(load_file(str(R / "tiny_e51dcf0_vision_proj.safetensors")))
    torch.save(sd, str(tmp_path / "e51.pth"))
    shutil.copy(R / "tiny_0420_config.json", tmp_path / "e51_config.json")
    convert(tmp_path / "e51.pth", tmp_path / "m", vision_encoder=str(R / "tiny_siglip2_p16"), **quiet)
    return load_model(tmp_path / "m")


def test_naflex_pixels_and_march_model_match_upstream(tmp_path):
    nf = load_file(str(R / "naflex_e51dcf0.safetensors"))
    model = naflex_model(tmp_path)
    assert model.cfg.vision.resize == "naflex" and model.cfg.merge == 4 and not model.cfg.projector_norm
    for name in ("img320x200", "img1000x200"):
        packed = pixel_tensor(picture(name), model.cfg.vision)[None]
        patches, mask, shapes = split_naflex(packed)
        m = nf[f"{name}.pixel_attention_mask"].bool()[..., None]
        want = torch.where(m, nf["pixel_lut"][nf[f"{name}.pixel_values_u8"].long()], 0.)
        assert torch.equal(patches, want), name
        assert torch.equal(mask.int(), nf[f"{name}.pixel_attention_mask"]), name
        assert torch.equal(shapes, nf[f"{name}.spatial_shapes"]), name
        with torch.no_grad():
            feats = model.vision_encoder(packed)
            out = model(nf["input_ids"], pixel_values=packed)
        torch.testing.assert_close(feats, nf[f"{name}.vision_last_hidden_state"], atol=1e-4, rtol=0)
        torch.testing.assert_close(model.project(feats), nf[f"{name}.vision_proj"], atol=1e-4, rtol=0)
        torch.testing.assert_close(out.hidden_states, nf[f"{name}.hidden_states"], atol=1e-4, rtol=0)
        assert torch.equal(out.logits.argmax(-1), nf[f"{name}.logits_argmax"]), name
    with torch.no_grad():
        out = model(nf["input_ids"], pixel_values=pixel_tensor(picture("img320x200"), model.cfg.vision)[None])
    torch.testing.assert_close(out.logits[:, -16:], nf["img320x200.logits_last16"], atol=1e-4, rtol=0)


def test_naflex_sizes_for_other_aspect_ratios():
    """Other aspect ratios: 320x240 -> 14 x 18 (252 real); 1000x200 -> 7 x 35; a square -> 16 x 16."""
    from minimind_v.hf.pixels import naflex_size
    assert naflex_size(240, 320, 16, 256) == (224, 288)
    assert naflex_size(200, 1000, 16, 256) == (112, 560)
    assert naflex_size(512, 512, 16, 256) == (256, 256)
    assert naflex_size(1, 5000, 16, 256) == (16, 4096)           # each side at least one patch


# ---------------------------------------------------------------- refusals: clear, non-zero, nothing left behind

def _mixed(tmp_path):
    sd = torch.load(str(R / "tiny_0420.pth"), weights_only=True)
    sd["vision_proj.mlp.2.weight"] = torch.zeros(64, 64)
    torch.save(sd, str(tmp_path / "mixed.pth"))
    return [str(tmp_path / "mixed.pth"), "--config", str(R / "tiny_0420_config.json")]


def _truncated(tmp_path):
    (tmp_path / "cut.pth").write_bytes((R / "tiny_0420.pth").read_bytes()[:500_000])
    return [str(tmp_path / "cut.pth"), "--config", str(R / "tiny_0420_config.json")]


def _truncated_hf(tmp_path):
    shutil.copytree(R / "tiny_0420_hf", tmp_path / "hf")
    (tmp_path / "hf" / "pytorch_model.bin").write_bytes((R / "tiny_0420_hf" / "pytorch_model.bin").read_bytes()[:9999])
    return [str(tmp_path / "hf")]


def _wrong_preset(tmp_path):
    return [str(R / "tiny_0420.pth"), "--preset", "minimind-3v-2603"]


def _wrong_encoder(tmp_path):
    return [str(R / "tiny_0420.pth"), "--vision-encoder", str(R / "tiny_siglip2_p16")]


def _march_config(tmp_path):
    d = json.loads((R / "tiny_0420_config.json").read_text())
    (tmp_path / "march_config.json").write_text(json.dumps(dict(d, merge=4, projector_norm=False)))
    return [str(R / "tiny_0420.pth"), "--config", str(tmp_path / "march_config.json")]


def _bare(tmp_path):
    shutil.copy(R / "tiny_0420.pth", tmp_path / "sft_vlm_64.pth")
    return [str(tmp_path / "sft_vlm_64.pth")]


@pytest.mark.parametrize("make,message", [
    (_mixed, "mixed projector keys"),
    (_truncated, "cannot be read as a checkpoint"),
    (_truncated_hf, "hf (pytorch_model.bin) cannot be read as a checkpoint"),
    (_wrong_preset, "is a 0420 (2026-04-20) checkpoint but --preset minimind-3v-2603 describes a March 2026"),
    (_wrong_encoder, "holds a Siglip2VisionModel (siglip2-base-p16-ve) but this 0420 (2026-04-20) model needs a "
                     "SiglipVisionModel"),
    (_march_config, "the weights are 0420 (2026-04-20) but its config says March 2026"),
    (_bare, "--preset minimind-3v-0420"),
], ids=["mixed", "truncated", "truncated-hf", "preset", "encoder", "config", "no-config"])
def test_refused_inputs_exit_clearly_and_leave_nothing(make, message, tmp_path, capsys):
    args = make(tmp_path)
    out = tmp_path / "out"
    assert cli.main(["convert", *args[:1], str(out), *args[1:]]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".out.")]      # no staging folder left


def test_existing_output_folder_is_not_overwritten(tmp_path, capsys):
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "mine.txt").write_text("keep")
    assert cli.main(["convert", str(R / "tiny_0420.pth"), str(tmp_path / "out")]) == 2
    assert "already exists (a folder); choose a new output or pass --overwrite" in capsys.readouterr().err
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["mine.txt"]


# ---------------------------------------------------------------- the 0420 data format

def test_0420_data_rows_give_upstream_tokens_labels_and_pixels():
    """Every row of both files (conversations as JSON string and as a list; no image_names; a placeholder
    picture on the text-only row) gives upstream's ids and labels, and its pixels' sha256.

    Upstream pads every row to max_length (id 0, label -100); we pad in the collator, so the rendered row
    must equal upstream's prefix and the rest must be padding. One deliberate difference: at 128 upstream
    cuts row list/1 inside its second image's placeholders (a sample with no label that splices part of
    a picture); we never cut inside an image, so that row is skipped as `too_long` (at 256 it matches)."""
    import hashlib

    from minimind_v.config import ModelConfig
    from minimind_v.data.chatml import parse_conversations, render
    from minimind_v.data.parquet import Sample, Skipped, VLMDataset
    from minimind_v.formats.generations import config_for
    from minimind_v.tokenizer import Tokenizer
    tok = Tokenizer.load(R / "tiny_0420_hf")
    cfg: ModelConfig = config_for(json.loads((R / "tiny_0420_config.json").read_text()), "0420", "test")
    exp = json.loads((R / "data_0420_expected.json").read_text())
    checked = 0
    for name in ("data_0420.parquet", "data_0420_list.parquet"):
        for row, want_row in exp[name].items():
            for variant, want in want_row["variants"].items():
                kind, length = variant.split("@")
                ds = VLMDataset(R / name, tok, cfg, int(length), think_block=kind == "no_system_think_kept")
                if (name, row, length) == ("data_0420_list.parquet", "1", "128"):
                    s = ds[int(row)]
                    assert isinstance(s, Skipped) and s.kind == "too_long"
                    continue
                if kind == "seeded":        # upstream's random choices, as recorded: a system prompt, the think block
                    msgs = parse_conversations(ds.rows[int(row)]["conversations"])
                    if want["random_system_prompt_added"]:
                        msgs = [{"role": "system", "content": want["random_system_prompt_added"]}] + msgs
                    r = render(msgs, tok, cfg.image_token_len, int(length),
                               think_block=want["empty_think_removed"] is False)
                    s = Sample(torch.tensor(r.ids), torch.tensor(r.labels), None)
                else:
                    s = ds[int(row)]
                assert isinstance(s, Sample), (name, row, variant, s)
                n = len(s.input_ids)
                ids, labels = want["input_ids"], want["labels"]
                assert s.input_ids.tolist() == ids[:n], (name, row, variant)
                assert s.labels.tolist() == labels[:n], (name, row, variant)
                assert set(ids[n:]) <= {0} and set(labels[n:]) <= {-100}, (name, row, variant)
                checked += 1
            digest = want_row["pixel_values"]["pixel_values"]
            s = VLMDataset(R / name, tok, cfg, 256)[int(row)]
            if digest["sum_f64"] == -196608.0:          # the text-only row: upstream's all -1 placeholder
                assert s.pixel_values is None
                continue
            pv = patches_to_picture(s.pixel_values, 32).contiguous()
            assert list(pv.shape) == digest["shape"]
            assert hashlib.sha256(pv.numpy().tobytes()).hexdigest() == digest["sha256"], (name, row)
    assert checked >= 22


# ---------------------------------------------------------------- writing back: the original's own layout

def _same_file(back: dict, orig: dict):
    """What upstream's loading path needs: load_state_dict(sd, strict=False) on its MiniMindVLM reports
    only vision_encoder.* missing, so the key set, shapes and dtypes must be exactly its trainer's."""
    assert set(back) == set(orig)
    for k in orig:
        assert back[k].shape == orig[k].shape and back[k].dtype == orig[k].dtype, k
        assert torch.equal(back[k], orig[k]), k


@pytest.mark.parametrize("generation", ["0420", "2603"])
def test_round_trip_upstream_to_ours_to_reference_is_exact(generation, tmp_path):
    if generation == "0420":
        src, encoder = R / "tiny_0420.pth", R / "tiny_siglip_p32"
        convert(src, tmp_path / "m", vision_encoder=str(encoder), **quiet)
    else:
        naflex_model(tmp_path)
        src, encoder = tmp_path / "e51.pth", R / "tiny_siglip2_p16"
    orig = torch.load(str(src), weights_only=True)
    out = tmp_path / "back" / "sft_vlm_64.pth"
    assert cli.main(["convert", str(tmp_path / "m"), str(out), "--to", "reference", "--dtype", "fp16"]) == 0
    back = torch.load(str(out), weights_only=True)
    _same_file(back, orig)
    ref_cfg = json.loads((out.parent / "sft_vlm_64_config.json").read_text())
    upstream_cfg = json.loads((R / "tiny_0420_config.json").read_text())
    for k in ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads", "vocab_size",
              "image_hidden_size", "image_token_len", "image_ids", "tie_word_embeddings", "intermediate_size"):
        assert ref_cfg[k] == upstream_cfg[k], k
    # and back again: the generation is read from the written config and keys, the model is the same
    convert(out, tmp_path / "again", vision_encoder=str(encoder), **quiet)
    a, b = load_model(tmp_path / "m"), load_model(tmp_path / "again")
    assert a.cfg == b.cfg
    pix = pixel_tensor(picture("img320x200"), a.cfg.vision)[None]
    ids = load_file(str(R / ("fixture_0420.safetensors" if generation == "0420" else "naflex_e51dcf0.safetensors")))
    with torch.no_grad():
        assert torch.equal(a(ids["input_ids"], pixel_values=pix).logits, b(ids["input_ids"], pixel_values=pix).logits)


# ---------------------------------------------------------------- the 0420 training recipe

def test_trainable_projector_first_and_last_layers(tmp_path):
    """0420's vlm-sft: the projector (its LayerNorm included) and the first and last LLM layers, nothing else."""
    from minimind_v.train.stages import TRAINABLE_CHOICES, set_trainable
    convert(R / "tiny_0420.pth", tmp_path / "m", vision_encoder=str(R / "tiny_siglip_p32"), **quiet)
    model = load_model(tmp_path / "m")
    set_trainable(model, TRAINABLE_CHOICES["projector+first+last"])
    on = {n for n, p in model.named_parameters() if p.requires_grad}
    assert "vision_proj.mlp.0.weight" in on and "vision_proj.mlp.3.bias" in on
    assert {n.split(".")[2] for n in on if n.startswith("model.layers.")} == {"0", "1"}       # 2 layers: first, last
    from minimind_v.config import preset
    with torch.device("meta"):
        four = MiniMindVLM(preset("minimind-3v-0420", num_hidden_layers=4), vision=False)
    set_trainable(four, TRAINABLE_CHOICES["projector+first+last"])
    assert {n.split(".")[2] for n, p in four.named_parameters() if p.requires_grad and ".layers." in n} == {"0", "3"}
    assert not any(n.startswith(("vision_encoder.", "model.embed_tokens", "model.norm")) for n in on)
    set_trainable(model, TRAINABLE_CHOICES["projector"])
    assert {n for n, p in model.named_parameters() if p.requires_grad} == \
        {n for n, _ in model.vision_proj.named_parameters(prefix="vision_proj")}


# ---------------------------------------------------------------- export --to hf, for both generations

def _hf_load(folder):
    from transformers import AutoImageProcessor, AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(str(folder), trust_remote_code=True, dtype=torch.float32).eval()
    return model, AutoImageProcessor.from_pretrained(str(folder), trust_remote_code=True)


def test_0420_export_hf_loads_in_transformers_and_in_upstreams_eval_path(tmp_path):
    from transformers import SiglipImageProcessor, SiglipVisionModel
    convert(R / "tiny_0420.pth", tmp_path / "m", vision_encoder=str(R / "tiny_siglip_p32"), **quiet)
    assert cli.main(["export", "--model", str(tmp_path / "m"), "--to", "hf", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "| vision encoder | SigLIP (" in card            # 0420 uses SigLIP v1, and the card says so
    model, proc = _hf_load(tmp_path / "hf")
    f = fx()
    for name in PICS:
        pv = proc(images=[picture(name)], return_tensors="pt")["pixel_values"]
        assert torch.equal(pv, f["pixel_lut"][f[f"{name}.pixel_values_u8"].long()])      # (1, 3, 256, 256)
        with torch.no_grad():
            logits = model(f["input_ids"], pixel_values=pv).logits
        torch.testing.assert_close(logits[:, -16:], f[f"{name}.logits_last16"], atol=1e-4, rtol=0)
    # upstream's eval_vlm.py: its own encoder and processor set on the loaded model, pixels as a dict
    model.vision_encoder = SiglipVisionModel.from_pretrained(str(R / "tiny_siglip_p32"), dtype=torch.float32).eval()
    upstream_proc = SiglipImageProcessor.from_pretrained(str(R / "tiny_siglip_p32"))
    inputs = upstream_proc(images=picture("img320x200"), return_tensors="pt")
    with torch.no_grad():
        logits = model(f["input_ids"], attention_mask=f["attention_mask"], pixel_values=dict(inputs)).logits
    torch.testing.assert_close(logits[:, -16:], f["img320x200.logits_last16"], atol=1e-4, rtol=0)
    out = model.generate(f["input_ids"], attention_mask=f["attention_mask"], max_new_tokens=8, do_sample=False,
                         pixel_values=dict(inputs))
    assert out[:, f["input_ids"].shape[1]:].tolist() == f["img320x200.greedy_ids"].tolist()
    # and back: the exported folder converts to ours with the same numbers
    convert(tmp_path / "hf", tmp_path / "again", **quiet)
    check_model(load_model(tmp_path / "again"), f)


def test_march_naflex_export_hf_gives_upstreams_logits(tmp_path):
    naflex_model(tmp_path)
    assert cli.main(["export", "--model", str(tmp_path / "m"), "--to", "hf", str(tmp_path / "hf")]) == 0
    assert "| vision encoder | SigLIP2 (" in (tmp_path / "hf" / "README.md").read_text()
    model, proc = _hf_load(tmp_path / "hf")
    nf = load_file(str(R / "naflex_e51dcf0.safetensors"))
    inputs = proc(images=[picture("img1000x200")], return_tensors="pt")
    assert torch.equal(inputs["spatial_shapes"], nf["img1000x200.spatial_shapes"])
    assert torch.equal(inputs["pixel_attention_mask"], nf["img1000x200.pixel_attention_mask"])
    with torch.no_grad():
        out = model(nf["input_ids"], output_hidden_states=True, **inputs)
    torch.testing.assert_close(out.hidden_states[-1], nf["img1000x200.hidden_states"], atol=1e-4, rtol=0)


def test_hand_written_config_and_upstream_hf_folder_used_directly(tmp_path):
    """What users try: a config that says merge 1 / projector_norm true now loads; and upstream's
    Hugging Face folder serves as a (text-only) model folder as it is."""
    d = json.loads((R / "tiny_0420_config.json").read_text())
    (tmp_path / "mine.json").write_text(json.dumps(dict(d, merge=1, projector_norm=True)))
    convert(R / "tiny_0420.pth", tmp_path / "m", config=str(tmp_path / "mine.json"), **quiet)
    f = fx()
    for folder in (tmp_path / "m", R / "tiny_0420_hf"):
        model = load_model(folder)
        assert model.vision_encoder is None and model.cfg.projector_norm and model.cfg.merge == 1
        with torch.no_grad():
            torch.testing.assert_close(model(f["text.input_ids"]).logits, f["text.logits"], atol=1e-4, rtol=0)


def test_0420_preset_builds_upstreams_names_and_shapes():
    """The preset at the tiny sizes has exactly the keys and shapes of upstream's trainer file; full size, the
    projector is LayerNorm(768) + 2 x Linear(768, 768) = 1,182,720 parameters, and the encoder is SigLIP v1."""
    from minimind_v.config import preset
    from minimind_v.formats.convert_export import parameter_counts
    d = json.loads((R / "tiny_0420_config.json").read_text())
    small = preset("minimind-3v-0420", **{k: d[k] for k in ("hidden_size", "num_hidden_layers", "num_attention_heads",
                                                              "num_key_value_heads", "vocab_size")},
                   vision=dict(preset("minimind-3v-0420").vision.__dict__, hidden_size=d["image_hidden_size"]))
    with torch.device("meta"):
        model = MiniMindVLM(small, vision=False)
        full = MiniMindVLM(preset("minimind-3v-0420"), vision=False)
    upstream = torch.load(str(R / "tiny_0420.pth"), weights_only=True)
    assert {k: tuple(v.shape) for k, v in model.state_dict().items()} == {k: tuple(v.shape) for k, v in upstream.items()}
    assert parameter_counts(full)["projector"] == 1_182_720
    v = preset("minimind-3v-0420").vision
    assert (v.encoder_class, v.patch_size, v.image_size, v.resample, v.resize) == ("siglip", 32, 256, "bicubic", "square")
    assert preset("minimind-3v-2603").vision.resize == "naflex"


def test_encoder_folder_without_weights_is_a_clear_error(tmp_path, capsys):
    (tmp_path / "enc").mkdir()
    shutil.copy(R / "tiny_siglip_p32" / "config.json", tmp_path / "enc" / "config.json")
    assert cli.main(["convert", str(R / "tiny_0420.pth"), str(tmp_path / "out"),
                     "--vision-encoder", str(tmp_path / "enc")]) == 2
    err = capsys.readouterr().err
    assert "error:" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_folder_with_the_old_projector_norm_keys_still_loads(tmp_path):
    """Before the 0420 layout, `projector_norm` folders held `vision_proj.norm.*` + Linears at mlp.0 / mlp.2."""
    from safetensors.torch import save_file
    convert(R / "tiny_0420.pth", tmp_path / "m", **quiet)
    sd = load_file(str(tmp_path / "m" / "model.safetensors"))
    old = {"vision_proj.mlp.0.": "vision_proj.norm.", "vision_proj.mlp.1.": "vision_proj.mlp.0.",
           "vision_proj.mlp.3.": "vision_proj.mlp.2."}
    sd = {next((to + k[len(o):] for o, to in old.items() if k.startswith(o)), k): v for k, v in sd.items()}
    save_file(sd, str(tmp_path / "m" / "model.safetensors"))
    f = fx()
    with torch.no_grad():
        proj = load_model(tmp_path / "m", vision=False).project(f["img256.vision_last_hidden_state"])
    torch.testing.assert_close(proj, f["img256.vision_proj"], atol=1e-5, rtol=0)


def test_a_picture_for_a_text_only_folder_is_one_line(capsys):
    """The original's released HF folder carries no encoder: chat with --image says so in one line."""
    rc = cli.main(["chat", "--model", str(R / "tiny_0420_hf"), "--image", str(R / "img256.png"), "--prompt", "hi",
                   "--max-new-tokens", "2"])
    err = capsys.readouterr().err
    assert rc == 2 and "no vision encoder" in err and "Traceback" not in err and len(err.strip().splitlines()) == 1
