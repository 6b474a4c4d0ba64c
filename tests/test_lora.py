"""LoRA with PEFT: `train --lora-rank` changes only the adapter (and the projector when chosen), the adapter
folder loads in chat / eval / serve and through PEFT on the exported base, `merge` equals the adapter model,
and resume is exact as for full training.

A tiny random base model (conftest's tiny_model_dir: the tiny preset with its trainable-here encoder) on the
synthetic shapes data; a high lr so that four steps move every trainable weight visibly.
"""
from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minimind_v import cli
from minimind_v.formats.load import load_model
from helpers import pixel_tensor
from minimind_v.train import checkpoint as ckpt
from minimind_v.train.lora import load_adapter
from minimind_v.train.loop import TrainConfig, train


def lora_cfg(out, data, base, **kw) -> TrainConfig:
    c = dict(stage="vlm-sft", data=[str(data["sft"])], out=str(out), init_from=str(base), batch_size=4,
             max_length=128, lr=1e-2, seed=5, max_steps=4, save_every=2, keep_last=3, progress=False, plot=False,
             log_every=1, lora_rank=4, lora_dropout=0.1)
    c.update(kw)
    return TrainConfig(**c)


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory, synth_data, tiny_model_dir):
    out = tmp_path_factory.mktemp("lora") / "run"
    summary = train(lora_cfg(out, synth_data, tiny_model_dir))
    return out, Path(summary["model"])


def base_name(k: str) -> str:
    """A name in the LoRA-injected model -> the base model's name for the same weight."""
    return k.replace(".base_layer.", ".").replace("vision_proj.original_module.", "vision_proj.")


def test_only_adapter_and_projector_change(lora_run, tiny_model_dir):
    out, adapter = lora_run
    assert (adapter / "adapter_config.json").exists() and (adapter / "adapter_model.safetensors").exists()
    assert (adapter / "tokenizer.json").exists()
    conf = json.loads((adapter / "adapter_config.json").read_text())
    assert conf["base_model_name_or_path"] == str(Path(tiny_model_dir).resolve()) and conf["r"] == 4
    base = load_file(str(tiny_model_dir / "model.safetensors"))
    final = load_file(str(ckpt.latest_valid(out) / "model.safetensors"))          # the whole trained state
    lora = {k for k in final if ".lora_" in k}
    proj = {k for k in final if k.startswith("vision_proj.modules_to_save.")}
    assert lora and proj
    assert not any(k.startswith("vision_encoder.") for k in lora)                  # SigLIP's q_proj untouched
    for k, v in final.items():
        if k in lora or k in proj:
            continue
        assert torch.equal(v, base[base_name(k)]), f"{k} changed"                  # every base weight as it was
    assert all(final[k].abs().sum() > 0 for k in lora if ".lora_B." in k)         # B starts at zero: trained
    for k in proj:
        assert not torch.equal(final[k], base[k.replace("modules_to_save.default.", "")]), k
    saved = load_file(str(adapter / "adapter_model.safetensors"))
    assert any(".vision_proj." in k for k in saved)                               # projector in the adapter


def test_frozen_projector_and_attention_targets(tmp_path, synth_data, tiny_model_dir):
    summary = train(lora_cfg(tmp_path / "run", synth_data, tiny_model_dir, lora_projector="freeze",
                             lora_targets="q_proj,v_proj", max_steps=2, save_every=0))
    saved = load_file(str(Path(summary["model"]) / "adapter_model.safetensors"))
    mods = {k.split(".lora_")[0].rsplit(".", 1)[1] for k in saved}
    assert mods == {"q_proj", "v_proj"} and not any("vision_proj" in k for k in saved)
    # llm-sft from JSONL: the stage does not train the projector, so by default the adapter leaves it alone
    from test_resume import _jsonl_sft
    jsonl = _jsonl_sft(tmp_path / "sft.jsonl", 16)
    summary = train(lora_cfg(tmp_path / "llm", {"sft": jsonl}, tiny_model_dir, stage="llm-sft", max_steps=2,
                             save_every=0, max_length=64))
    saved = load_file(str(Path(summary["model"]) / "adapter_model.safetensors"))
    assert saved and not any("vision_proj" in k for k in saved)
    with pytest.raises(ValueError, match="--from"):
        train(lora_cfg(tmp_path / "x", synth_data, None, init_from=None, tokenizer=str(tiny_model_dir)))
    with pytest.raises(ValueError, match="unknown module"):
        train(lora_cfg(tmp_path / "y", synth_data, tiny_model_dir, lora_targets="qproj"))


def inputs(model):
    from test_export import picture
    ids = torch.tensor([[1, 30, 31] + [model.cfg.image_token_id] * model.cfg.image_token_len + [32, 2, 1, 33]])
    return ids, pixel_tensor(picture(3, size=(40, 40)), model.cfg.vision)[None]


def test_merge_equals_adapter_model_and_loads_everywhere(lora_run, tmp_path, capsys):
    from test_export import picture
    _, adapter = lora_run
    unmerged = load_adapter(adapter, merge=False)
    base = unmerged.base_model.model
    ids, pix = inputs(base)
    with torch.no_grad():
        ref = unmerged(ids, pixel_values=pix).logits
    assert cli.main(["merge", str(adapter), str(tmp_path / "merged")]) == 0
    assert "merged" in capsys.readouterr().out
    merged = load_model(tmp_path / "merged")
    assert not any("lora" in k or "base_layer" in k for k in merged.state_dict())   # a plain model folder
    with torch.no_grad():
        torch.testing.assert_close(merged(ids, pixel_values=pix).logits, ref, atol=1e-5, rtol=0)
        torch.testing.assert_close(load_model(adapter)(ids, pixel_values=pix).logits, ref, atol=1e-5, rtol=0)
    # chat on the adapter folder answers as on the merged folder
    picture(4).save(tmp_path / "p.png")
    answers = []
    for folder in (adapter, tmp_path / "merged"):
        assert cli.main(["chat", "--model", str(folder), "--image", str(tmp_path / "p.png"), "--prompt",
                         "What colour is it?", "--greedy", "--max-new-tokens", "8"]) == 0
        answers.append(capsys.readouterr().out)
    assert answers[0] == answers[1]


def test_eval_and_serve_take_the_adapter_folder(lora_run, tmp_path, synth_data, capsys):
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    from minimind_v.pipeline import VLM
    from minimind_v.serve import create_app
    _, adapter = lora_run
    assert cli.main(["eval", "--model", str(adapter), "--data", str(synth_data["eval"]), "--limit", "2",
                     "--max-new-tokens", "4"]) == 0
    assert "n = 2" in capsys.readouterr().out
    with TestClient(create_app(VLM.load(adapter))) as client:
        r = client.post("/v1/chat/completions", json={"model": adapter.name, "messages": [{"role": "user", "content": "Hi"}],
                                                      "temperature": 0, "max_tokens": 4})
    assert r.status_code == 200, r.text


def test_adapter_through_peft_on_the_exported_base(lora_run, tiny_model_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForImageTextToText

    from minimind_v.formats.convert_export import export
    _, adapter = lora_run
    export(tiny_model_dir, tmp_path / "hf", to="hf", log=lambda m: None)
    hf = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True).eval()
    ours = load_adapter(adapter, merge=False)
    ids, pix = inputs(ours.base_model.model)
    with torch.no_grad():
        plain = hf(input_ids=ids, pixel_values=pix).logits
        want = ours(ids, pixel_values=pix).logits
        with_adapter = PeftModel.from_pretrained(hf, str(adapter)).eval()      # injects into hf in place
        got = with_adapter(input_ids=ids, pixel_values=pix).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=0)
    assert (plain - want).abs().max() > 1e-3                                      # the adapter matters


def test_resume_is_exact(lora_run, tmp_path, synth_data, tiny_model_dir):
    out, adapter = lora_run
    ck = out / "checkpoints" / "step-00000002"
    summary = train(lora_cfg(tmp_path / "r", synth_data, tiny_model_dir, resume=str(ck)))
    a, b = load_file(str(adapter / "adapter_model.safetensors")), load_file(
        str(Path(summary["model"]) / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.slow
def test_killed_lora_run_resumes_exactly(tmp_path, synth_data, tiny_model_dir):
    """A real `minimind-v train --lora-rank` process killed with SIGKILL, continued with --resume auto."""
    from test_resume import _cli, _run_until
    args = ["--stage", "vlm-sft", "--data", str(synth_data["sft"]), "--from", str(tiny_model_dir), "--lr", "1e-2",
            "--seed", "5", "--max-steps", "6", "--save-every", "2", "--batch-size", "4", "--max-length", "128",
            "--lora-rank", "4", "--lora-dropout", "0.1", "--lora-targets", "attn"]
    rc, log = _run_until(_cli(tmp_path / "full", args), None)
    assert rc == 0, log
    rc, log = _run_until(_cli(tmp_path / "killed", args), 3)
    assert rc == -signal.SIGKILL, log
    rc, log = _run_until(_cli(tmp_path / "killed", args), None)
    assert rc == 0 and "resumed from" in log, log
    a = load_file(str(tmp_path / "full" / "model" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "killed" / "model" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_export_of_an_adapter_folder_is_the_merged_model_with_its_history(lora_run, tmp_path):
    """`export --to hf` of RUN/model (an adapter) writes the merged model; the card names the LoRA stage."""
    from transformers import AutoModelForImageTextToText
    _, adapter = lora_run
    assert cli.main(["export", "--model", str(adapter), "--to", "hf", str(tmp_path / "hf")]) == 0
    card = (tmp_path / "hf" / "README.md").read_text()
    assert "`vlm-sft` on sft.parquet (LoRA rank 4, merged), 4 optimizer steps" in card
    hf = AutoModelForImageTextToText.from_pretrained(str(tmp_path / "hf"), trust_remote_code=True).eval()
    ours = load_model(adapter)
    ids, pix = inputs(ours)
    with torch.no_grad():
        torch.testing.assert_close(hf(input_ids=ids, pixel_values=pix).logits, ours(ids, pixel_values=pix).logits,
                                   atol=1e-5, rtol=0)
