"""Sequence packing and padding are exact: packed loss and gradients equal the unpacked ones, a padded
batch's loss is the token-weighted mean of its rows, and packed and padded training follow the same
loss curve.

Equal means equal up to float32 rounding (rtol 1e-5): any leak between packed rows (a wrong mask,
positions that do not restart, an image spliced into the wrong row) shows up as a difference orders of
magnitude larger (`test_packing_without_row_mask_would_differ` proves it).
"""
from __future__ import annotations


import pytest
import torch

from minimind_v.config import ModelConfig, tiny_siglip
from minimind_v.data.collate import Collator, pack_rows
from minimind_v.data.parquet import Sample
from minimind_v.model.llm import MiniMindLM, row_segments
from minimind_v.model.vlm import MiniMindVLM
from minimind_v.train.metrics import read_metrics

IMG = 12          # image token id
L_IMG = 4         # 16 patches / merge 4


def tiny_cfg(**kw) -> ModelConfig:
    return ModelConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                       vocab_size=300, vision=tiny_siglip(hidden=32, layers=1, heads=2, image_size=16, patch=4),
                       **kw)


def tiny_model(seed=0, **kw) -> MiniMindVLM:
    torch.manual_seed(seed)
    m = MiniMindVLM(tiny_cfg(**kw)).train()
    m.reset_parameters(std=0.1)          # livelier logits than 0.02, so differences would show
    return m


def make_sample(g: torch.Generator, index: int, prompt: int, reply: int, images: int = 0,
                adjacent: bool = False) -> Sample:
    """[bos] prompt text, `images` pictures (placeholders adjacent or separated by text), reply (labelled)."""
    def text(n):
        return torch.randint(13, 300, (n,), generator=g).tolist()
    ids = [1] + text(prompt)
    for k in range(images):
        ids += [IMG] * L_IMG
        if not adjacent:
            ids += text(2)
    ids += text(3)
    labels = [-100] * len(ids)
    r = text(reply)
    ids += r
    labels += r
    pv = torch.randn(images, 16, 48, generator=g) if images else None
    keys = [f"img{index}_{k}" for k in range(images)]
    return Sample(torch.tensor(ids), torch.tensor(labels), pv, index, image_keys=keys)


def mixed_rows(seed=0) -> list[Sample]:
    g = torch.Generator().manual_seed(seed)
    return [make_sample(g, 0, 5, 9, images=1),
            make_sample(g, 1, 12, 20),                      # text only
            make_sample(g, 2, 3, 7, images=2, adjacent=True),   # two images, one run of 8 placeholders
            make_sample(g, 3, 7, 4, images=2),              # two images with text between
            make_sample(g, 4, 20, 15),                      # text only
            make_sample(g, 5, 2, 30, images=1)]


def loss_and_grads(model, batch):
    model.zero_grad(set_to_none=True)
    out = model(batch.input_ids, labels=batch.labels, pixel_values=batch.pixel_values,
                position_ids=batch.position_ids, seq_ids=batch.seq_ids, label_index=batch.label_index)
    out.loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return out.loss.detach(), grads


def assert_grad_close(got, want, name, rel=1e-5):
    """Max abs difference within `rel` of the tensor's largest gradient (float32 rounding)."""
    scale = float(want.abs().max())
    assert float((got - want).abs().max()) <= rel * scale + 1e-12, name


def test_pack_rows_uses_few_even_bins_and_keeps_every_row():
    lengths = [50, 300, 120, 700, 90, 400, 10]
    bins = pack_rows(lengths, 768)
    assert sorted(i for b in bins for i in b) == list(range(len(lengths)))
    assert all(sum(lengths[i] for i in b) <= 768 for b in bins)
    assert bins[0][0] == 3 and len(bins) == 3            # longest first; 1670 tokens need 3 x 768
    assert pack_rows(lengths, 768) == bins               # deterministic
    even = pack_rows([260, 250, 240, 230], 768)           # first fit alone would give 750 + 230
    assert sorted(sum([260, 250, 240, 230][i] for i in b) for b in even) == [490, 490]


def test_packed_batch_layout():
    rows = mixed_rows()
    total = sum(len(s.input_ids) for s in rows)
    b = Collator(0, "pack", max_length=64)(rows)
    assert b.input_ids.shape[1] <= 64 and b.input_ids.shape[0] < len(rows)
    assert b.n_real_tokens == total and b.n_samples == len(rows)
    assert b.n_tokens == b.input_ids.numel()
    assert b.n_label_tokens == sum(int((s.labels[1:] != -100).sum()) for s in rows)
    assert b.sum_sq_len == sum(len(s.input_ids) ** 2 for s in rows)
    # positions restart at 0 where a row starts, and a row's first label is never trained
    for r in range(b.input_ids.shape[0]):
        seq, pos = b.seq_ids[r], b.position_ids[r]
        starts = [0] + [i for i in range(1, len(seq)) if seq[i] != seq[i - 1]]
        for s in starts:
            if seq[s] >= 0:
                assert pos[s] == 0 and b.labels[r, s] == -100
    # images follow the order of their placeholders through the packed rows, and so do the keys
    order = [k for r in range(b.input_ids.shape[0]) for k in _rows_in_order(b, r, rows)]
    want = torch.cat([rows[i].pixel_values for i in order if rows[i].pixel_values is not None])
    assert torch.equal(b.pixel_values, want)
    assert b.image_keys == [k for i in order for k in rows[i].image_keys]
    assert b.n_images == 6


def _rows_in_order(b, r, rows):
    """Which sample sits in each segment of packed row r (matched by its token ids)."""
    out = []
    seq = b.seq_ids[r]
    for k in range(int(seq.max()) + 1):
        ids = b.input_ids[r][seq == k]
        out.append(next(i for i, s in enumerate(rows) if len(s.input_ids) == len(ids)
                        and torch.equal(s.input_ids, ids)))
    return out


@pytest.mark.parametrize("split", [True, False], ids=["per-row", "mask"])
@pytest.mark.parametrize("max_length", [48, 64, 200])
def test_packed_loss_and_gradients_equal_unpacked(max_length, split, monkeypatch):
    """Both ways of keeping packed rows apart: one causal call per row (the CPU's) and the mask (CUDA's)."""
    monkeypatch.setattr(MiniMindLM, "split_packed_rows", split)
    model = tiny_model()
    rows = mixed_rows()
    ref_loss, ref_grads = loss_and_grads(model, Collator(0, "longest")(rows))
    packed = Collator(0, "pack", max_length=max_length)(rows)
    assert packed.input_ids.shape[0] < len(rows)          # several rows really share a sequence
    loss, grads = loss_and_grads(model, packed)
    assert abs(float(loss) - float(ref_loss)) <= 1e-5 * float(ref_loss)
    assert grads.keys() == ref_grads.keys() and "vision_proj.mlp.0.weight" in grads
    for name in ref_grads:
        assert_grad_close(grads[name], ref_grads[name], name)
    assert ref_grads["vision_proj.mlp.0.weight"].abs().sum() > 0     # the images are really used


def test_packed_moe_loss_equals_unpacked():
    model = tiny_model(use_moe=True)
    rows = mixed_rows(1)
    ref, ref_grads = loss_and_grads(model, Collator(0, "longest")(rows))
    loss, grads = loss_and_grads(model, Collator(0, "pack", max_length=80)(rows))
    assert abs(float(loss) - float(ref)) <= 1e-5 * float(ref)
    # the experts and the projector; not the router, whose gradient through a renormalised top-1
    # weight (always exactly 1) is rounding noise
    names = [n for n in ref_grads if ".experts." in n or n.startswith("vision_proj.")]
    assert len(names) > 4
    for name in names:
        assert_grad_close(grads[name], ref_grads[name], name)


def test_row_segments():
    ids = torch.tensor([[0, 0, 0, 1, 1, -1], [0, 1, 1, 1, 1, 1]])
    assert row_segments(ids) == [[(0, 3), (3, 2), (5, 1)], [(0, 1), (1, 5)]]
    assert row_segments(torch.tensor([[0, 0, 1, 0]])) is None       # id 0 in two runs: only the mask is exact


def test_packing_without_row_mask_would_differ():
    """The equality above is not vacuous: dropping the block-diagonal mask changes the loss a lot."""
    model = tiny_model()
    rows = mixed_rows()
    ref, _ = loss_and_grads(model, Collator(0, "longest")(rows))
    packed = Collator(0, "pack", max_length=64)(rows)
    packed.seq_ids = None
    leaky, _ = loss_and_grads(model, packed)
    assert abs(float(leaky) - float(ref)) > 1e-4 * float(ref)     # 10x the tolerance used above


def test_padded_loss_is_token_weighted_mean_of_rows():
    model = tiny_model(seed=1)
    rows = mixed_rows(2)
    batch = Collator(0, "longest")(rows)
    loss, _ = loss_and_grads(model, batch)
    num = den = 0.0
    for s in rows:
        one = Collator(0, "longest")([s])
        l1, _ = loss_and_grads(model, one)
        num += float(l1) * one.n_label_tokens
        den += one.n_label_tokens
    assert den == batch.n_label_tokens
    assert abs(float(loss) - num / den) <= 1e-5 * num / den
    max_loss, _ = loss_and_grads(model, Collator(0, "max", max_length=96)(rows))
    assert abs(float(max_loss) - float(loss)) <= 1e-5 * float(loss)


@pytest.mark.parametrize("mode", ["longest", "pack"])
def test_host_label_index_gives_the_mask_loss(mode):
    """The collator's label positions (no device-to-host sync) select exactly the boolean mask's."""
    model = tiny_model()
    batch = Collator(0, mode, max_length=64)(mixed_rows())
    via_index, _ = loss_and_grads(model, batch)
    batch.label_index = None
    via_mask, _ = loss_and_grads(model, batch)
    assert float(via_index) == float(via_mask)
    assert batch.n_label_tokens == int((batch.labels[:, 1:] != -100).sum())


def _curve(tmp_path, tok, data, padding):
    from minimind_v.train.loop import TrainConfig, train
    out = tmp_path / padding
    train(TrainConfig(stage="vlm-sft", data=[str(data)], out=str(out), tokenizer=tok.path, batch_size=8,
                      max_steps=5, lr=2e-3, log_every=1, padding=padding, progress=False, save_final=False,
                      plot=False, seed=3))
    recs = read_metrics(out / "metrics.jsonl")
    return [r["loss"] for r in recs if "loss" in r], recs


def test_packed_and_padded_training_follow_the_same_loss_curve(tmp_path, tiny_tokenizer, synth_data):
    padded, _ = _curve(tmp_path, tiny_tokenizer, synth_data["sft"], "longest")
    packed, recs = _curve(tmp_path, tiny_tokenizer, synth_data["sft"], "pack")
    assert len(padded) == len(packed) == 5
    assert padded[-1] < padded[0]                        # it trains, so the curves are not flat
    for a, b in zip(padded, packed):
        assert abs(a - b) <= 1e-4 * abs(a), (padded, packed)
    assert recs[-1]["pad_fraction"] < 0.2                # packing really removed most padding
