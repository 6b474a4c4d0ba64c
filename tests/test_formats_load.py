"""formats/load.py: one loader for every checkpoint kind gives the same model as converting first.

An original checkpoint file (the reference fixture), our folder converted from it, and a Hugging Face folder
exported from that must all load through `load_model` to the same logits; folder-only options are refused
for folders, and an unknown file kind is named."""
import pytest
import torch
from conftest import REF
from safetensors.torch import load_file

from minimind_v.formats.convert_export import convert, export
from minimind_v.formats.load import load_model

quiet = dict(log=lambda m: None)


def fixture():
    return load_file(str(REF / "fixture.safetensors"))


def logits(model, fx):
    with torch.no_grad():
        return model(fx["input_ids"], vision_features=fx["vision_features"].float(), logits_to_keep=16).logits


def test_file_folder_and_hf_folder_load_alike(tmp_path):
    cfg = str(REF / "tiny_dense_config.json")
    fx = fixture()
    direct = load_model(REF / "tiny_dense.pth", vision=False, config=cfg, **quiet)
    torch.testing.assert_close(logits(direct, fx), fx["dense.expected_logits_last16"], atol=1e-4, rtol=0)
    convert(REF / "tiny_dense.pth", tmp_path / "ours", config=cfg, **quiet)
    export(tmp_path / "ours", tmp_path / "hf", "hf", **quiet)
    for folder in (tmp_path / "ours", tmp_path / "hf"):
        model = load_model(folder, vision=False)
        torch.testing.assert_close(logits(model, fx), logits(direct, fx), atol=1e-6, rtol=0)


def test_folder_refuses_checkpoint_options_and_odd_files(tmp_path):
    convert(REF / "tiny_dense.pth", tmp_path / "ours", config=str(REF / "tiny_dense_config.json"), **quiet)
    with pytest.raises(ValueError, match="bare checkpoint files"):
        load_model(tmp_path / "ours", preset_name="minimind-3v-2603")
    odd = tmp_path / "weights.txt"
    odd.write_text("not weights")
    with pytest.raises(ValueError, match="expected a model folder or an original checkpoint"):
        load_model(odd)
