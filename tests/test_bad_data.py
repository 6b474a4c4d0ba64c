"""Bad data cannot stop training: every kind of broken row is skipped and counted (by the reader, the
training loop and `minimind-v data check`), unusual image modes are converted correctly, and a
non-finite loss skips its update and aborts only after `max_bad_steps` in a row."""
from __future__ import annotations

import io
import json
import struct
import zlib
from collections import Counter

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from PIL import Image

from minimind_v.train.loop import NonFiniteLoss, TrainConfig, train
from minimind_v.train.metrics import read_metrics


# ---------------------------------------------------------------- building broken data
def _png(img: Image.Image, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return buf.getvalue()


def _bomb_png(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims width x height pixels (only the header is valid)."""
    data = bytearray(_png(Image.new("RGB", (1, 1))))
    ihdr = bytes(data[12:16]) + struct.pack(">II", width, height) + bytes(data[24:29])
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(ihdr) & 0xFFFFFFFF)
    return bytes(data)


def _palette_with_transparency() -> Image.Image:
    img = Image.new("P", (32, 32), 0)
    img.putpalette([0, 0, 0, 255, 0, 0] + [0] * (256 * 3 - 6))
    for x in range(16, 32):
        for y in range(32):
            img.putpixel((x, y), 1)
    img.info["transparency"] = 0          # index 0 (left half) is transparent, index 1 (right half) red
    return img


def _conv(*turns) -> str:
    roles = ["user", "assistant"]
    return json.dumps([{"role": roles[i % 2], "content": t} for i, t in enumerate(turns)])


def unusual_mode_images() -> dict[str, bytes]:
    return {
        "CMYK": _png(Image.new("CMYK", (32, 32), (255, 0, 0, 0)), "TIFF"),
        "P+transparency": _png(_palette_with_transparency()),
        "LA": _png(Image.new("LA", (32, 32), (0, 0))),
        "I;16": _png(Image.new("I;16", (32, 32), 65535)),
        "1": _png(Image.new("1", (32, 32), 1)),
    }


def bad_rows() -> list[tuple[str | None, str | bytes, object]]:
    """(expected skip kind or None for a kept row, conversations, image_bytes) for every problem kind."""
    good_png = _png(Image.new("RGB", (32, 32), (10, 200, 30)))
    q = "<image>\nWhat colour is it?"
    a = "It is green."
    rows = [
        ("bad_image", _conv(q, a), b"this is not an image"),
        ("bad_image", _conv(q, a), good_png[: len(good_png) // 2]),            # truncated
        ("empty_image", _conv(q, a), b""),
        ("too_many_pixels", _conv(q, a), _bomb_png(20000, 20000)),             # 400 Mpx, never decoded
        ("tiny_image", _conv(q, a), _png(Image.new("RGB", (1, 1)))),
        ("extreme_aspect", _conv(q, a), _png(Image.new("RGB", (400, 20)))),
        ("marker_mismatch", _conv("<image><image>\nCompare them.", a), good_png),
        ("marker_mismatch", _conv("No marker here.", a), good_png),
        ("invalid_json", '[{"role": "user", "content": "oops"', good_png),
        ("wrong_roles", json.dumps([{"role": "assistant", "content": a}, {"role": "user", "content": q}]),
         good_png),
        ("wrong_roles", json.dumps([{"role": "user", "content": q}, {"role": "robot", "content": a}]), good_png),
        ("no_assistant", json.dumps([{"role": "user", "content": q}]), good_png),
        ("empty_reply", _conv(q, "   "), good_png),
        ("too_long", _conv("word " * 400 + q, a), good_png),
        ("null_image", _conv(q, a), None),
        ("invalid_utf8", b'[{"role": "user", "content": "\xff\xfe"}]', good_png),
    ]
    rows += [(None, _conv(q, a), data) for data in unusual_mode_images().values()]
    rows.append((None, _conv("Hello, who are you?", "A tiny model."), None))         # a text-only row
    return rows


def write_mixed_parquet(path, good_parquet, n_good: int = 26):
    """Good synthetic rows with every bad kind mixed in; returns {row: expected kind or None}."""
    good = pq.read_table(good_parquet).slice(0, n_good).to_pylist()
    entries = [(None, r["conversations"], r["image_bytes"]) for r in good]
    bad = bad_rows()
    mixed = []
    for i, e in enumerate(entries):           # spread the bad rows through the file
        mixed.append(e)
        if i < len(bad):
            mixed.append(bad[i])
    mixed += bad[len(entries):]
    convs = [c.encode() if isinstance(c, str) else c for _, c, _ in mixed]
    # a string column that may hold invalid UTF-8 (as non-validating writers produce): binary viewed as string
    conv_col = pa.array(convs, type=pa.binary()).view(pa.string())
    table = pa.table({"conversations": conv_col,
                      "image_bytes": pa.array([img for _, _, img in mixed], type=pa.binary()),
                      "image_names": pa.array([f"row{i}" for i in range(len(mixed))])})
    pq.write_table(table, path, row_group_size=8)
    return {i: kind for i, (kind, _, _) in enumerate(mixed)}


@pytest.fixture(scope="module")
def mixed(tmp_path_factory, synth_data):
    path = tmp_path_factory.mktemp("bad") / "mixed.parquet"
    expected = write_mixed_parquet(path, synth_data["sft"])
    return path, expected


# ---------------------------------------------------------------- the reader
def test_reader_names_every_kind(mixed, tiny_tokenizer):
    from minimind_v.config import preset
    from minimind_v.data.parquet import Sample, Skipped, VLMDataset
    path, expected = mixed
    cfg = preset("tiny", vocab_size=tiny_tokenizer.vocab_size, image_token_id=tiny_tokenizer.image_id)
    ds = VLMDataset([path], tiny_tokenizer, cfg, max_length=160)
    assert len(ds) == len(expected)
    for i, kind in expected.items():
        item = ds[i]
        if kind is None:
            assert isinstance(item, Sample), (i, item)
        else:
            assert isinstance(item, Skipped) and item.kind == kind, (i, kind, item)


def test_bomb_is_refused_before_decoding(monkeypatch):
    from minimind_v import image as vision
    bomb = _bomb_png(100_000, 100_000)
    decoded = []
    monkeypatch.setattr(Image.Image, "load", lambda self: decoded.append(self.size))
    with pytest.raises(vision.ImageError) as e:
        vision.open_image(bomb)
    assert e.value.kind == "too_many_pixels" and decoded == []


def test_unusual_modes_convert_to_the_right_colours():
    from minimind_v.image import open_image
    imgs = unusual_mode_images()
    px = {name: open_image(data).getpixel((4, 4)) for name, data in imgs.items()}
    assert px["CMYK"] == (0, 255, 255)          # pure cyan
    assert px["LA"] == (255, 255, 255)          # fully transparent black -> the white background
    assert px["I;16"] == (255, 255, 255)        # 16-bit full scale -> 8-bit full scale, not clipped garbage
    assert px["1"] == (255, 255, 255)
    pal = open_image(imgs["P+transparency"])
    assert pal.mode == "RGB" and pal.getpixel((4, 4)) == (255, 255, 255) and pal.getpixel((20, 4)) == (255, 0, 0)
    half = Image.new("LA", (8, 8), (0, 128))    # black at half opacity over white -> mid grey
    assert abs(open_image(_png(half)).getpixel((0, 0))[0] - 127) <= 1
    grey16 = Image.new("I;16", (8, 8), 32768)
    assert abs(open_image(_png(grey16)).getpixel((0, 0))[0] - 128) <= 1


def test_jsonl_reader_skips_and_counts(tmp_path, tiny_tokenizer):
    from minimind_v.data.parquet import Skipped
    from minimind_v.data.text import TextDataset
    lines = [b'{"text": "a fine line"}', b'{"text": "bad \xff utf8"}', b'{"text": ', b'{"text": ""}',
             b'{"conversations": [{"role": "user", "content": "hi"}]}', b'[1, 2]',
             json.dumps({"conversations": json.loads(_conv("hi", "hello"))}).encode()]
    f = tmp_path / "t.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")
    ds = TextDataset([f], tiny_tokenizer, 64)
    kinds = [it.kind if isinstance(it, Skipped) else None for it in (ds[i] for i in range(len(ds)))]
    assert kinds == [None, "invalid_utf8", "invalid_json", "empty_text", "no_assistant", "invalid_json", None]


# ---------------------------------------------------------------- training on it
def test_training_skips_counts_and_uses_every_good_row(tmp_path, mixed, tiny_tokenizer, capsys):
    path, expected = mixed
    n = len(expected)
    out = tmp_path / "run"
    bs = 4
    steps = n // bs
    assert n % bs == 0, "the test wants one exact epoch"
    cfg = TrainConfig(stage="vlm-sft", data=[str(path)], out=str(out), tokenizer=tiny_tokenizer.path,
                      batch_size=bs, max_length=160, epochs=1, log_every=4, progress=False,
                      trace_rows=True, plot=False)
    summary = train(cfg)
    want = Counter(k for k in expected.values() if k)
    assert summary["steps"] == steps
    assert summary["skipped"] == dict(want)
    used = [r for line in (out / "rows-rank0.jsonl").read_text().splitlines() for r in json.loads(line)["rows"]]
    good = sorted(i for i, k in expected.items() if k is None)
    assert sorted(used) == good                  # every good row trained on exactly once, no bad one
    recs = read_metrics(out / "metrics.jsonl")
    assert all("skipped_by_kind" in r for r in recs)
    assert recs[-1]["skipped_by_kind"] == dict(sorted(want.items()))
    assert all(torch.isfinite(torch.tensor(r["loss"])) for r in recs)
    logs = capsys.readouterr().out
    assert "skipped rows so far:" in logs
    assert "skipped rows by kind: " + ", ".join(f"{k}={v}" for k, v in sorted(want.items())) in logs


# ---------------------------------------------------------------- the checker
def test_data_check_reports_every_problem(mixed, tiny_tokenizer, tmp_path, capsys):
    from minimind_v.cli import main
    path, expected = mixed
    rep_json = tmp_path / "report.json"
    code = main(["data", "check", str(path), "--tokenizer", tiny_tokenizer.path, "--max-length", "160",
                 "--json", str(rep_json), "--no-progress"])
    text = capsys.readouterr().out
    assert code == 1
    rep = json.loads(rep_json.read_text())
    got = {p["row"]: p["kind"] for p in rep["problems"]}
    assert got == {i: k for i, k in expected.items() if k}
    assert rep["rows"] == len(expected)
    modes = [p for p in rep["notes"] if p["kind"] == "converted_mode"]
    assert len(modes) == len(unusual_mode_images())
    for kind in set(got.values()):
        assert kind in text
    assert f"{path}:{min(i for i, k in expected.items() if k == 'null_image')}\tnull_image" in text


def test_data_check_exit_codes(synth_data, tmp_path, capsys):
    from minimind_v.cli import main
    assert main(["data", "check", str(synth_data["sft"]), "--no-progress"]) == 0
    assert "0 row(s) with problems" in capsys.readouterr().out
    broken = tmp_path / "broken.parquet"
    broken.write_bytes(b"PAR1 this is not parquet")
    assert main(["data", "check", str(broken), "--no-progress"]) == 2
    assert "cannot read" in capsys.readouterr().out
    jl = tmp_path / "t.jsonl"
    jl.write_bytes(b'{"text": "ok"}\n{"text": \n')
    assert main(["data", "check", str(jl), "--no-progress"]) == 1
    assert "invalid_json" in capsys.readouterr().out


# ---------------------------------------------------------------- non-finite losses
def _nan_on_calls(monkeypatch) -> dict:
    """Make the model's training loss inf / NaN on the forward calls listed in the returned dict's "bad"
    (counted from 1; True: every call), keeping the autograd graph so backward runs as usual."""
    from minimind_v.model.vlm import MiniMindVLM
    orig = MiniMindVLM.forward
    state = {"n": 0, "bad": set()}

    def forward(self, *a, **kw):
        out = orig(self, *a, **kw)
        if out.loss is not None and self.training:
            state["n"] += 1
            if state["bad"] is True or state["n"] in state["bad"]:
                out.loss = out.loss * float("inf" if state["n"] % 2 else "nan")     # inf and NaN both
        return out
    monkeypatch.setattr(MiniMindVLM, "forward", forward)
    return state


def _text_run(tmp_path, tok, name, **kw):
    f = tmp_path / "t.jsonl"
    f.write_text("\n".join(json.dumps({"text": f"the red circle is number {i}"}) for i in range(32)) + "\n")
    return TrainConfig(stage="llm-pretrain", data=[str(f)], out=str(tmp_path / name), tokenizer=tok.path,
                       batch_size=4, progress=False, plot=False, log_every=1, **kw)


def test_nan_loss_skips_the_update(tmp_path, tiny_tokenizer, monkeypatch):
    from safetensors.torch import load_file

    from minimind_v.train.build import build_model, seed_all
    state = _nan_on_calls(monkeypatch)
    state["bad"] = True
    cfg = _text_run(tmp_path, tiny_tokenizer, "a", max_steps=4, max_bad_steps=10)
    s = train(cfg)
    assert s["bad_steps"] == 4 and state["n"] == 4
    # no update ever happened: the saved weights are the initial ones
    seed_all(cfg.seed)
    init = build_model(cfg, tiny_tokenizer, lambda m: None).state_dict()
    saved = load_file(str(tmp_path / "a" / "model" / "model.safetensors"))
    assert all(torch.equal(saved[k], init[k]) for k in saved)


def test_nan_losses_in_a_row_abort_with_a_clear_message(tmp_path, tiny_tokenizer, monkeypatch, capsys):
    state = _nan_on_calls(monkeypatch)
    state["bad"] = {2}
    s = train(_text_run(tmp_path, tiny_tokenizer, "ok", max_steps=3, max_bad_steps=2))
    assert s["bad_steps"] == 1                # an isolated NaN is skipped and counted, training goes on
    assert "non-finite loss at step 2: update skipped" in capsys.readouterr().out
    state.update(n=0, bad={2, 4, 5, 6, 7})
    with pytest.raises(NonFiniteLoss, match=r"3 non-finite losses in a row \(step 6\): aborting"):
        train(_text_run(tmp_path, tiny_tokenizer, "abort", max_steps=8, max_bad_steps=3))
