"""KV-cache generation is exact: cached decoding equals recomputing the whole sequence token by token,
batched (left-padded) generation equals one prompt at a time, images are encoded once, and the cache is
written in place (no concatenation per token)."""
from __future__ import annotations

import pytest
import torch

from conftest import make_tiny_model
from minimind_v.model.generate import SamplingParams, generate
from minimind_v.model.llm import KVCache


def lively(tok, **kw):
    """A tiny model with larger random weights: well-separated logits, so greedy choices are not ties.

    Its forward never scores the image placeholder: a random model may otherwise "generate" one, and
    fed back in a teacher-forced pass it would ask for a picture that is not there (a trained model never
    emits it; these tests are about the cache and batching, whatever the tokens)."""
    m = make_tiny_model(tok, seed=kw.pop("seed", 0), **kw)
    m.reset_parameters(std=0.15)
    forward, image = m.forward, m.cfg.image_token_id

    def no_placeholder(*a, **k):
        out = forward(*a, **k)
        out.logits[..., image] = float("-inf")
        return out
    m.forward = no_placeholder
    return m.eval()


def prompt(model, g, n_text, n_images=0):
    cfg = model.cfg
    ids = [cfg.bos_token_id] + torch.randint(13, cfg.vocab_size, (n_text,), generator=g).tolist()
    for _ in range(n_images):
        ids += [cfg.image_token_id] * cfg.image_token_len + torch.randint(13, cfg.vocab_size, (2,), generator=g).tolist()
    return ids


def pixels(model, n, g):
    v = model.cfg.vision
    return torch.randn(n, v.num_patches, 3 * v.patch_size ** 2, generator=g)


def greedy(n):
    return SamplingParams(max_new_tokens=n, temperature=0.0)


def test_kv_cache_is_preallocated_and_written_in_place(tiny_model):
    cfg = tiny_model.cfg
    cache = KVCache(cfg, 2, 8, "cpu", torch.float32)
    ptrs = [t.data_ptr() for t in cache.k + cache.v]
    shape = (2, cfg.num_key_value_heads, 3, cfg.head_dim)
    k, v = torch.randn(shape), torch.randn(shape)
    k_all, _ = cache.write(0, k, v)
    cache.pos += 3
    k2 = torch.randn(2, cfg.num_key_value_heads, 1, cfg.head_dim)
    k_all, v_all = cache.write(0, k2, k2)
    assert k_all.shape[2] == 4 and torch.equal(k_all[:, :, :3], k) and torch.equal(k_all[:, :, 3:], k2)
    assert k_all.data_ptr() == ptrs[0]                               # a view of the preallocated buffer
    assert [t.data_ptr() for t in cache.k + cache.v] == ptrs
    cache.pos = 8
    with pytest.raises(ValueError, match="KV cache full"):
        cache.write(0, k2, k2)


@pytest.mark.parametrize("moe", [False, True])
def test_cached_decoding_equals_full_recompute_token_by_token(tiny_tokenizer, moe):
    model = lively(tiny_tokenizer, use_moe=moe)
    g = torch.Generator().manual_seed(1)
    ids = prompt(model, g, 5, n_images=1)
    pv = pixels(model, 1, g)
    with torch.no_grad():
        cache = KVCache(model.cfg, 1, len(ids) + 10, "cpu", torch.float32)
        out = model(torch.tensor([ids]), pixel_values=pv, cache=cache, logits_to_keep=1)
        seq = list(ids)
        for step in range(10):
            nxt = int(out.logits[0, -1].argmax())
            full = model(torch.tensor([seq]), pixel_values=pv).logits[0, -1]     # no cache: everything again
            torch.testing.assert_close(out.logits[0, -1], full, rtol=1e-4, atol=1e-4)
            seq.append(nxt)
            out = model(torch.tensor([[nxt]]), cache=cache, logits_to_keep=1)


def test_generate_equals_teacher_forced_argmax(tiny_tokenizer):
    """generate() (batched, left-padded, images) picks at every step the argmax that a full forward pass
    over the prompt plus the tokens so far gives."""
    model = lively(tiny_tokenizer)
    g = torch.Generator().manual_seed(2)
    prompts = [prompt(model, g, 3, 1), prompt(model, g, 17, 0), prompt(model, g, 1, 2)]
    pv = pixels(model, 3, g)
    per_row = [pv[0:1], None, pv[1:3]]
    outs = generate(model, prompts, greedy(8), pixel_values=pv)
    for p, o, img in zip(prompts, outs, per_row):
        assert len(o) == 8
        with torch.no_grad():
            logits = model(torch.tensor([p + o]), pixel_values=img).logits[0]
        for k, tok in enumerate(o):
            row = logits[len(p) - 1 + k]
            assert float(row.max() - row[tok]) < 1e-5, (k, tok, int(row.argmax()))


def test_batched_generation_equals_one_by_one(tiny_tokenizer):
    model = lively(tiny_tokenizer, seed=4)
    g = torch.Generator().manual_seed(3)
    prompts = [prompt(model, g, 2, 1), prompt(model, g, 25, 0), prompt(model, g, 6, 2), prompt(model, g, 9, 0)]
    pv = pixels(model, 3, g)
    per_row = [pv[0:1], None, pv[1:3], None]
    batched = generate(model, prompts, greedy(12), pixel_values=pv)
    alone = [generate(model, [p], greedy(12), pixel_values=img)[0] for p, img in zip(prompts, per_row)]
    assert batched == alone
    assert len({tuple(o) for o in alone}) == len(alone)            # different prompts, different outputs


def test_images_are_encoded_once_per_generation(tiny_tokenizer):
    model = lively(tiny_tokenizer)
    calls = []
    model.vision_encoder.register_forward_hook(lambda m, i, o: calls.append(i[0].shape[0]))
    g = torch.Generator().manual_seed(5)
    prompts = [prompt(model, g, 4, 1), prompt(model, g, 4, 1)]
    generate(model, prompts, greedy(10), pixel_values=pixels(model, 2, g))
    assert calls == [2]


def test_stop_token_and_seeded_sampling(tiny_tokenizer):
    model = lively(tiny_tokenizer)
    g = torch.Generator().manual_seed(6)
    p = prompt(model, g, 8)
    ref = generate(model, [p], greedy(10))[0]
    stopped = generate(model, [p], SamplingParams(max_new_tokens=10, stop_ids=(ref[3],)))[0]
    assert stopped == ref[:ref.index(ref[3])]
    top1 = generate(model, [p], SamplingParams(max_new_tokens=10, temperature=1.0, top_k=1, seed=0))[0]
    assert top1 == ref
    s = SamplingParams(max_new_tokens=10, temperature=1.0, top_p=0.9, seed=11)
    assert generate(model, [p], s)[0] == generate(model, [p], s)[0]


def test_a_picture_is_encoded_once_per_conversation(tiny_tokenizer):
    """Every chat turn resends the picture; the encoder must run for it only on the first turn, and the
    replies must be those of a fresh encoding."""
    from PIL import Image

    from minimind_v.pipeline import VLM
    model = make_tiny_model(tiny_tokenizer, seed=4)
    vlm = VLM(model, tiny_tokenizer)
    side = model.cfg.vision.image_size
    pic, other = Image.new("RGB", (side, side), (200, 30, 30)), Image.new("RGB", (side, side), (30, 30, 200))
    calls = []
    real = model.encode_images
    model.encode_images = lambda pv: (calls.append(pv.shape[0]), real(pv))[1]
    turn1 = [{"role": "user", "content": "What colour is it?"}]
    first = "".join(vlm.stream(turn1, [pic], temperature=0, max_new_tokens=6))
    turn2 = turn1 + [{"role": "assistant", "content": first}, {"role": "user", "content": "And now?"}]
    second = "".join(vlm.stream(turn2, [pic], temperature=0, max_new_tokens=6))
    assert calls == [1]                                            # turn 2 reused the visual tokens
    "".join(vlm.stream(turn1, [other], temperature=0, max_new_tokens=6))
    assert calls == [1, 1]                                         # a new picture is encoded
    fresh = VLM(make_tiny_model(tiny_tokenizer, seed=4), tiny_tokenizer)
    assert "".join(fresh.stream(turn2, [pic], temperature=0, max_new_tokens=6)) == second
