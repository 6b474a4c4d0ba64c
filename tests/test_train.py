"""One tiny run of each stage through the real loop lowers the loss and writes a usable model folder."""
from __future__ import annotations

import json

import pytest

from minimind_v.train.loop import TrainConfig, train
from minimind_v.train.metrics import read_metrics


def _jsonl(path, rows):
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _run(tmp_path, stage, data, **kw):
    cfg = TrainConfig(stage=stage, data=[str(d) for d in data], out=str(tmp_path / stage), batch_size=8,
                      lr=3e-3, log_every=5, progress=False, **kw)
    summary = train(cfg)
    recs = read_metrics(tmp_path / stage / "metrics.jsonl")
    return summary, recs


@pytest.mark.parametrize("stage", ["llm-pretrain", "llm-sft"])
def test_llm_stages_lower_the_loss(tmp_path, tiny_tokenizer, stage):
    from minimind_v.datatools import synth
    texts = synth.corpus(40, 1)
    if stage == "llm-pretrain":
        rows = [{"text": t} for t in texts]
    else:
        rows = [{"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
                for q, a in zip(texts[1::2], texts[2::2])]
    data = _jsonl(tmp_path / "d.jsonl", rows)
    summary, recs = _run(tmp_path, stage, [data], tokenizer=tiny_tokenizer.path, max_steps=20)
    assert recs[-1]["loss"] < recs[0]["loss"] * 0.8
    assert summary["steps"] == 20 and (tmp_path / stage / "model" / "model.safetensors").exists()
    assert (tmp_path / stage / "loss.png").exists()
    for key in ("lr", "step_time_s", "samples_per_s", "real_tokens_per_s", "mfu"):
        assert key in recs[-1]


def test_vlm_stages_lower_the_loss_and_chain(tmp_path, tiny_tokenizer, synth_data):
    s1, r1 = _run(tmp_path, "vlm-pretrain", [synth_data["pretrain"]], tokenizer=tiny_tokenizer.path,
                  max_steps=25, unfreeze_vision=True)
    assert r1[-1]["loss"] < r1[0]["loss"] * 0.85
    s2, r2 = _run(tmp_path, "vlm-sft", [synth_data["sft"]], init_from=s1["model"], max_steps=15)
    assert r2[-1]["loss"] < r2[0]["loss"]
    from minimind_v.formats.load import load_model
    m = load_model(s2["model"])
    assert m.cfg.vision.image_size == 32


def test_stage_freezing_follows_the_guide(tiny_model):
    from minimind_v.train.stages import STAGES, set_trainable
    set_trainable(tiny_model, STAGES["vlm-pretrain"].trainable)
    train_names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert any(n.startswith("vision_proj.") for n in train_names)
    assert all(n.startswith(("vision_proj.", "model.layers.0.")) for n in train_names)
    set_trainable(tiny_model, STAGES["vlm-sft"].trainable)
    train_names = {n for n, p in tiny_model.named_parameters() if p.requires_grad}
    assert "model.embed_tokens.weight" in train_names and "model.layers.1.mlp.up_proj.weight" in train_names
    assert not any(n.startswith("vision_encoder.") for n in train_names)
    set_trainable(tiny_model, STAGES["vlm-sft"].trainable, unfreeze_vision=True)
    assert any(p.requires_grad for p in tiny_model.vision_encoder.parameters())
