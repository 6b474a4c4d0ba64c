"""The on-disk frozen-encoder cache returns exactly what the encoder computes, encodes each distinct
image once, keeps encoders apart, refuses a trained encoder, and training with it gives the same losses
as training without it."""
from __future__ import annotations

import hashlib
import json

import pytest
import torch

from conftest import make_tiny_model
from minimind_v.train.encoder_cache import EncoderCache
from minimind_v.train.metrics import read_metrics


def _count_calls(module):
    calls = []
    module.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    return calls


def _pixels(model, n, seed=0):
    g = torch.Generator().manual_seed(seed)
    v = model.cfg.vision
    return torch.randn(n, v.num_patches, 3 * v.patch_size ** 2, generator=g)


def test_cache_returns_the_encoder_output_and_encodes_once(tmp_path, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    pv = _pixels(model, 3)
    with torch.no_grad():
        want = model.vision_encoder(pv)
    calls = _count_calls(model.vision_encoder)
    cache = EncoderCache(tmp_path, model)
    first = cache.features(model, pv, ["a", "b", "c"])
    assert torch.equal(first, want) and calls == [3]
    again = cache.features(model, pv[[2, 0]], ["c", "a"])
    assert torch.equal(again, want[[2, 0]]) and calls == [3]          # all hits: the encoder was not run
    assert cache.stats() == {"hits": 2, "misses": 3, "hit_rate": 0.4}
    files = sorted(p.name for p in cache.dir.rglob("*.safetensors"))
    assert files == ["a.safetensors", "b.safetensors", "c.safetensors"]
    assert not list(cache.dir.rglob("*.tmp"))                          # written atomically
    assert json.loads((cache.dir / "manifest.json").read_text())["fingerprint"] == cache.fingerprint


def test_duplicate_images_in_a_batch_are_encoded_once(tmp_path, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    pv = _pixels(model, 2)
    pv = torch.cat([pv, pv[:1]])
    calls = _count_calls(model.vision_encoder)
    out = EncoderCache(tmp_path, model).features(model, pv, ["x", "y", "x"])
    assert calls == [2] and torch.equal(out[0], out[2])


def test_a_new_process_reads_what_an_earlier_one_wrote(tmp_path, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    pv = _pixels(model, 2)
    a = EncoderCache(tmp_path, model).features(model, pv, ["p", "q"])
    calls = _count_calls(model.vision_encoder)
    fresh = EncoderCache(tmp_path, model)                  # same encoder: same folder
    assert torch.equal(fresh.features(model, pv, ["p", "q"]), a) and calls == []


def test_different_encoders_or_dtypes_never_share_features(tmp_path, tiny_tokenizer):
    m1 = make_tiny_model(tiny_tokenizer, seed=0)
    m2 = make_tiny_model(tiny_tokenizer, seed=1)           # other encoder weights
    c1, c2 = EncoderCache(tmp_path, m1), EncoderCache(tmp_path, m2)
    c3 = EncoderCache(tmp_path, m1, torch.bfloat16)
    assert len({c1.dir, c2.dir, c3.dir}) == 3
    pv = _pixels(m1, 1)
    c1.features(m1, pv, ["k"])
    assert c2.get("k") is None
    out = c3.features(m1, pv, ["k"])
    assert out.dtype == torch.bfloat16


def test_cache_refuses_a_trained_encoder_and_missing_keys(tmp_path, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    model.set_vision_trainable(True)
    with pytest.raises(ValueError, match="cannot be cached"):
        EncoderCache(tmp_path, model)
    model.set_vision_trainable(False)
    cache = EncoderCache(tmp_path, model)
    with pytest.raises(ValueError, match="cache keys"):
        cache.features(model, _pixels(model, 2), ["only-one"])
    with pytest.raises(ValueError, match="bad cache key"):
        cache.path("../escape")


def test_a_damaged_cache_file_is_recomputed(tmp_path, tiny_tokenizer):
    model = make_tiny_model(tiny_tokenizer)
    pv = _pixels(model, 1)
    cache = EncoderCache(tmp_path, model)
    want = cache.features(model, pv, ["d"])
    cache.path("d").write_bytes(b"not a safetensors file")
    again = cache.features(model, pv, ["d"])
    assert torch.equal(again, want) and cache.damaged == 1
    assert torch.equal(cache.get("d"), want[0])                     # rewritten


def test_dataset_keys_images_by_content_hash(tiny_tokenizer, synth_data):
    import pyarrow.parquet as pq

    from minimind_v.config import preset
    from minimind_v.data.parquet import VLMDataset
    cfg = preset("tiny", vocab_size=tiny_tokenizer.vocab_size, image_token_id=tiny_tokenizer.image_id)
    ds = VLMDataset([synth_data["sft"]], tiny_tokenizer, cfg, 768, image_keys=True)
    raw = pq.read_table(synth_data["sft"], columns=["image_bytes"]).column("image_bytes")[3].as_py()
    assert ds[3].image_keys == [hashlib.sha256(raw).hexdigest()]


def _run(tmp_path, tok, data, name, **kw):
    from minimind_v.train.loop import TrainConfig, train
    out = tmp_path / name
    train(TrainConfig(stage="vlm-sft", data=[str(data)], out=str(out), tokenizer=tok.path, batch_size=16,
                      epochs=2, lr=2e-3, log_every=1, progress=False, save_final=False, plot=False, seed=5,
                      padding="pack", **kw))
    return [r["loss"] for r in read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_training_with_the_cache_gives_the_same_losses(tmp_path, tiny_tokenizer, synth_data):
    base = _run(tmp_path, tiny_tokenizer, synth_data["sft"], "plain")
    cache_dir = tmp_path / "enc"
    cached = _run(tmp_path, tiny_tokenizer, synth_data["sft"], "cached", encoder_cache=str(cache_dir))
    assert len(base) == len(cached) == 8                  # 2 epochs of 64 rows: the second one reads the cache
    for a, b in zip(base, cached):
        assert abs(a - b) <= 1e-5 * abs(a), (base, cached)
    assert len(list(cache_dir.rglob("*.safetensors"))) == 64    # one file per distinct image


def test_train_cli_fills_the_cache(tmp_path, tiny_tokenizer, synth_data):
    from minimind_v.cli import main
    cache_dir = tmp_path / "enc"
    code = main(["train", "--stage", "vlm-sft", "--data", str(synth_data["sft"]), "--out", str(tmp_path / "run"),
                 "--tokenizer", tiny_tokenizer.path, "--max-steps", "2", "--batch-size", "4",
                 "--encoder-cache", str(cache_dir), "--no-progress"])
    assert code == 0
    assert len(list(cache_dir.rglob("*.safetensors"))) == 8     # 2 steps x 4 rows, each with its own picture
