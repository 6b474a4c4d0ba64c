"""Data: tokenizer, chat rendering and label masks, truncation, the parquet reader, synthetic data."""
from __future__ import annotations

import io
import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from PIL import Image

from minimind_v.config import preset
from minimind_v.data.chatml import BadRow, parse_conversations, render, render_text
from minimind_v.data.collate import Collator
from minimind_v.data.parquet import Sample, Skipped, VLMDataset
from minimind_v.eval.score import is_correct
from minimind_v.tokenizer import Tokenizer

from conftest import REF


def test_tokenizer_round_trip_and_special_ids(tiny_tokenizer):
    text = "What colour is the circle? Ünïcödé ✓ 形状"
    assert tiny_tokenizer.decode(tiny_tokenizer.encode(text)) == text
    assert tiny_tokenizer.encode("<|image_pad|>") == [tiny_tokenizer.image_id] == [12]
    assert (tiny_tokenizer.pad_id, tiny_tokenizer.bos_id, tiny_tokenizer.eos_id) == (0, 1, 2)


def test_saved_tokenizer_folder_renders_chat_template_like_us(tiny_tokenizer):
    from transformers import AutoTokenizer
    hf = AutoTokenizer.from_pretrained(tiny_tokenizer.path)
    msgs = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello."}]
    ours, _ = render_text(msgs, 4, add_generation_prompt=False)
    assert hf.apply_chat_template(msgs, tokenize=False) == ours
    assert ours == "<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello.<|im_end|>\n"


def test_labels_cover_exactly_the_assistant_replies(tiny_tokenizer):
    tok = tiny_tokenizer
    msgs = parse_conversations(json.dumps([
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "<image>\nHow many shapes are there?"},
        {"role": "assistant", "content": "There are two."},
        {"role": "user", "content": "What colour is the circle?"},
        {"role": "assistant", "content": "The circle is red."}]))
    r = render(msgs, tok, image_token_len=4)
    labelled = tok.decode([t for t, l in zip(r.ids, r.labels) if l != -100], skip_special=False)
    assert labelled == "There are two.<|im_end|>\nThe circle is red.<|im_end|>\n"
    assert all(l in (-100, t) for t, l in zip(r.ids, r.labels))
    assert r.ids.count(tok.image_id) == 4 and r.n_images == 1


def test_reference_chat_examples_match_exactly():
    ref = REF
    tok = Tokenizer.load(ref / "tokenizer")
    examples = json.loads((ref / "chat_examples.json").read_text())["examples"]
    for ex in examples:
        for key, think in (("without_empty_think (p=0.8)", False), ("with_empty_think (p=0.2)", True)):
            want = ex[key]
            r = render(parse_conversations(ex["conversations"]), tok, 64, think_block=think)
            ids_key = next(k for k in want if "ids" in k)
            assert r.ids == want[ids_key], (ex["name"], key)
            spans_key = next(k for k in want if "span" in k)
            got = [i for i, l in enumerate(r.labels) if l != -100]
            expect = [i for a, b in want[spans_key] for i in range(a, b + 1)]
            assert got == expect, (ex["name"], key)


def test_truncation_never_cuts_inside_an_image(tiny_tokenizer):
    tok = tiny_tokenizer
    L = 8
    msgs = [{"role": "user", "content": "Look <image> and <image> please"},
            {"role": "assistant", "content": "Fine, " * 30}]
    full = render(msgs, tok, L)
    first_img = full.ids.index(tok.image_id)
    # a cut that would fall inside the second image moves to its start: one image kept
    with pytest.raises(BadRow) as e:
        render(msgs, tok, L, max_length=first_img + L + 3)
    assert e.value.kind == "too_long"            # the reply does not survive, so the row is rejected
    msgs2 = [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "ok " * 40},
             {"role": "user", "content": "<image>"}, {"role": "assistant", "content": "done"}]
    full2 = render(msgs2, tok, L)
    pos = full2.ids.index(tok.image_id)
    r = render(msgs2, tok, L, max_length=pos + 3)
    assert len(r.ids) == pos and r.n_images == 0 and tok.image_id not in r.ids
    assert any(l != -100 for l in r.labels)


def _png(color=(255, 0, 0), size=(20, 20), mode="RGB"):
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format="PNG")
    return buf.getvalue()


def test_parquet_reader_handles_binary_list_and_null(tiny_tokenizer, tmp_path):
    cfg = preset("tiny", vocab_size=tiny_tokenizer.vocab_size)
    rows = [
        ([{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "Red."}], [_png()]),
        ([{"role": "user", "content": "<image><image>\nBoth?"}, {"role": "assistant", "content": "Yes."}],
         [_png((0, 0, 255)), _png((0, 255, 0), mode="RGB")]),
        ([{"role": "user", "content": "No picture."}, {"role": "assistant", "content": "Ok."}], None),
        ([{"role": "user", "content": "<image>\nWhat?"}, {"role": "assistant", "content": "Hm."}], []),
    ]
    table = pa.table({"conversations": [json.dumps(c) for c, _ in rows],
                      "image_bytes": pa.array([i for _, i in rows], pa.list_(pa.binary())),
                      "image_names": ["a", "b,c", "", "d"]})
    pq.write_table(table, tmp_path / "d.parquet", row_group_size=2)
    ds = VLMDataset([tmp_path / "d.parquet"], tiny_tokenizer, cfg, max_length=200)
    items = [ds[i] for i in range(len(ds))]
    assert [type(x) for x in items] == [Sample, Sample, Sample, Skipped]
    assert items[0].pixel_values.shape[0] == 1 and items[1].pixel_values.shape[0] == 2
    assert items[2].pixel_values is None and items[3].kind == "null_image"
    b = Collator(tiny_tokenizer.pad_id)(items)
    assert b.pixel_values.shape[0] == 3 and b.skipped["null_image"] == 1
    assert b.input_ids.shape == (3, max(len(x.input_ids) for x in items[:3]))     # padded to longest
    n_pad = int((b.input_ids == tiny_tokenizer.image_id).sum())
    assert n_pad == 3 * cfg.image_token_len


def test_synth_data_is_well_formed(synth_data):
    from minimind_v.data.parquet import ParquetRows
    ev = ParquetRows(synth_data["eval"])
    row = ev[0]
    assert set(row) >= {"conversations", "image_bytes", "image_names", "answer", "type"}
    types = {ev[i]["type"] for i in range(len(ev))}
    assert types == {"colour", "shape", "count", "position"}
    for i in range(len(ev)):
        r = ev[i]
        conv = json.loads(r["conversations"])
        assert conv[0]["content"].startswith("<image>\n")
        assert is_correct(conv[1]["content"], r["answer"])      # the reply states the short answer
    img = Image.open(io.BytesIO(row["image_bytes"]))
    assert img.size == (32, 32)


def test_synth_answers_follow_the_picture():
    import random
    from minimind_v.datatools import synth
    rng = random.Random(0)
    for _ in range(50):
        objs = synth.make_scene(rng)
        q, a, short = synth.question(objs, "position", rng)
        if "to the right of the" in q:
            words = q.split()
            first = next(o for o in objs if f"{o.colour} {o.shape}" in q.split(" to the ")[0])
            second = next(o for o in objs if f"{o.colour} {o.shape}" in q.split("right of the ")[1])
            assert short == ("left" if first.cx < second.cx else "right"), words
        q, a, short = synth.question(objs, "count", rng)
        assert short == synth.NUMBERS[len(objs)]
