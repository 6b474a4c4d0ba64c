"""Tests for the data tools: converters (LLaVA JSON, caption folders, Hugging Face parquet), the preview
grid and the statistics. Every fixture is built here in tmp_path with tiny PIL images, including the
broken rows the converters must report (missing file, corrupt image, no assistant turn, duplicate image).
"""
from __future__ import annotations

import io
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from conftest import REF
from PIL import Image

from minimind_v.datatools import data_command
from minimind_v.data.chatml import parse_conversations
from minimind_v.datatools.convert import (CAPTION_PROMPTS, convert_captions, convert_hf, convert_llava,
                                     output_schema, val_count)
from minimind_v.data.parquet import ParquetRows, row_images
from minimind_v.datatools.preview import HEADER, TEXT_ONLY_BG, grid_layout, preview
from minimind_v.datatools.stats import stats

TOKENIZER = REF / "tokenizer"
QUIET = dict(progress=False, quiet=True)


def png_bytes(color, size=(16, 16), mode="RGB", fmt="PNG") -> bytes:
    buf = io.BytesIO()
    Image.new(mode, size, color).save(buf, format=fmt)
    return buf.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def read_rows(path) -> list[dict]:
    rows = ParquetRows(path)
    return [rows[i] for i in range(len(rows))]


def turn(frm, value):
    return {"from": frm, "value": value}


# ------------------------------------------------------------------------------------------------
# LLaVA JSON

@pytest.fixture
def llava(tmp_path):
    img = tmp_path / "img"
    write(img / "a.png", png_bytes((255, 0, 0), (20, 10)))
    write(img / "b.jpg", png_bytes((0, 0, 255), (30, 30), fmt="JPEG"))
    write(img / "sub" / "c.png", png_bytes((255, 0, 0), (20, 10)))         # same pixels as a.png
    write(img / "corrupt.png", b"\x89PNG\r\n\x1a\n this is not an image")
    write(img / "gray.png", png_bytes(128, (12, 12), mode="L"))
    items = [
        {"id": "r0", "image": "a.png", "conversations": [turn("human", "<image>\nWhat colour?"), turn("gpt", "Red.")]},
        {"id": "r1", "image": "b.jpg", "conversations": [turn("human", "What is it?"), turn("gpt", "Blue.")]},
        {"id": "r2", "image": "missing.png", "conversations": [turn("human", "<image>\nHi"), turn("gpt", "Ho")]},
        {"id": "r3", "image": "corrupt.png", "conversations": [turn("human", "<image>\nHi"), turn("gpt", "Ho")]},
        {"id": "r4", "image": "a.png", "conversations": [turn("human", "<image>\nOnly a question")]},
        {"id": "r5", "image": "sub/c.png", "conversations": [turn("human", "<image>\nAgain?"), turn("gpt", "Red.")]},
        {"id": "r6", "conversations": [turn("human", "Say hi."), turn("gpt", "Hi!")]},
        {"id": "r7", "image": ["a.png", "b.jpg"],
         "conversations": [turn("human", "<image>\n<image>\nCompare."), turn("gpt", "Red and blue.")]},
        {"id": "r8", "conversations": [turn("human", "<image>\nNo picture here"), turn("gpt", "?")]},
        {"id": "r9", "image": "gray.png", "conversations": [turn("human", "Shade?\n<image>"), turn("gpt", "Grey.")]},
    ]
    js = tmp_path / "llava.json"
    js.write_text(json.dumps(items))
    return js, img


def test_llava_rows_bad_rows_and_dedupe(llava, tmp_path):
    js, img = llava
    out = tmp_path / "out" / "llava.parquet"
    res = convert_llava(js, img, out, keep_columns=["id"], dedupe=True, **QUIET)

    assert res.rows_read == 10
    assert res.written == {"all": 5} and res.files == {"all": [str(out)]}
    assert [(p.row, p.kind) for p in res.bad] == [
        (2, "missing_image"), (3, "bad_image"), (4, "no_assistant"), (8, "marker_mismatch")]
    assert [(p.row, p.where) for p in res.duplicates] == [(5, "item 5")]
    assert "same image as item 0" in res.duplicates[0].msg
    report = res.report()
    assert "item 2: missing_image" in report and "rejected 4 row(s)" in report and "dropped 1 row" in report

    # a multi-image row exists, so the image column is list<binary> for every row
    assert pq.read_schema(out).field("image_bytes").type == pa.list_(pa.binary())
    rows = read_rows(out)
    assert [r["id"] for r in rows] == ["r0", "r1", "r6", "r7", "r9"]
    by_id = {r["id"]: r for r in rows}
    assert row_images(by_id["r0"]) == [(img / "a.png").read_bytes()]          # kept byte for byte
    msgs = parse_conversations(by_id["r1"]["conversations"])
    assert msgs == [{"role": "user", "content": "<image>\nWhat is it?"}, {"role": "assistant", "content": "Blue."}]
    assert parse_conversations(by_id["r9"]["conversations"])[0]["content"] == "Shade?\n<image>"   # marker kept
    assert by_id["r6"]["image_bytes"] is None and by_id["r6"]["image_names"] is None
    assert len(row_images(by_id["r7"])) == 2 and by_id["r7"]["image_names"] == "a.png,b.jpg"
    assert Image.open(io.BytesIO(row_images(by_id["r9"])[0])).mode == "L"


def test_llava_keep_duplicates_and_jsonl(llava, tmp_path):
    js, img = llava
    items = json.loads(js.read_text())
    jl = tmp_path / "llava.jsonl"
    jl.write_text("\n".join(json.dumps(it) for it in items[:2] + items[5:6]) + "\n{broken\n")
    res = convert_llava(jl, img, tmp_path / "o.parquet", **QUIET)      # no --dedupe: kept, but counted
    assert res.written == {"all": 3} and not res.duplicates and res.shared_images == 1
    assert "kept 1 row(s) whose image repeats" in res.report()
    assert [(p.where, p.kind) for p in res.bad] == [("line 4", "invalid_json")]
    # no multi-image row in this input: plain binary column
    assert pq.read_schema(tmp_path / "o.parquet").field("image_bytes").type == pa.binary()


# ------------------------------------------------------------------------------------------------
# image folder + captions

def caption_folder(tmp_path, n=4):
    folder = tmp_path / "pics"
    for k in range(n):
        write(folder / f"p{k}.png", png_bytes((10 * k, 200, 30), (100, 50)))
    return folder


def test_captions_jsonl_resize_reencode(tmp_path):
    folder = caption_folder(tmp_path)
    write(folder / "dup.png", (folder / "p0.png").read_bytes())
    write(folder / "bad.png", b"GIF89a nope")
    lines = [json.dumps({"file": "p0.png", "caption": "A green field."}),
             json.dumps({"image": "p1.png", "text": "Another field."}),
             "{not json",
             json.dumps({"file": "gone.png", "caption": "Missing."}),
             json.dumps({"file": "p2.png", "caption": "  "}),
             json.dumps({"file": "dup.png", "caption": "Same picture."}),
             json.dumps({"file": "bad.png", "caption": "Broken."}),
             json.dumps({"file": "p3.png"}),
             ""]
    (folder / "captions.jsonl").write_text("\n".join(lines))
    out = tmp_path / "cap.parquet"
    res = convert_captions(folder, out, max_side=32, image_format="jpeg", quality=80, seed=5, dedupe=True,
                           **QUIET)

    assert res.written == {"all": 2}
    assert [(p.where, p.kind) for p in res.bad] == [
        ("captions.jsonl line 3", "invalid_json"), ("captions.jsonl line 4", "missing_image"),
        ("captions.jsonl line 5", "empty_reply"), ("captions.jsonl line 7", "bad_image"),
        ("captions.jsonl line 8", "no_assistant")]
    assert [p.where for p in res.duplicates] == ["captions.jsonl line 6"]
    rows = read_rows(out)
    assert [r["image_names"] for r in rows] == ["p0.png", "p1.png"]
    for r in rows:
        im = Image.open(io.BytesIO(r["image_bytes"]))
        assert im.format == "JPEG" and im.size == (32, 16)            # 100x50 shrunk to a 32 longer side
        user, reply = parse_conversations(r["conversations"])
        assert user["role"] == "user" and user["content"].startswith("<image>\n")
        assert user["content"][len("<image>\n"):] in CAPTION_PROMPTS
    assert parse_conversations(rows[1]["conversations"])[1]["content"] == "Another field."

    # the prompt choice is a function of the seed: same seed, same rows
    again = convert_captions(folder, tmp_path / "cap2.parquet", max_side=32, image_format="jpeg", quality=80,
                             seed=5, dedupe=True, **QUIET)
    assert again.written == res.written
    assert [r["conversations"] for r in read_rows(tmp_path / "cap2.parquet")] == [r["conversations"] for r in rows]


def test_captions_csv_split_and_shards(tmp_path):
    folder = caption_folder(tmp_path, n=10)
    csv_text = "".join(f"p{k}.png,caption number {k}, with a comma\n" for k in range(10))
    (folder / "caps.csv").write_text(csv_text)                      # no header
    out = tmp_path / "split" / "cap.parquet"
    res = convert_captions(folder, out, captions=folder / "caps.csv", val_fraction=0.3, seed=1, shard_rows=3,
                           row_group_rows=2, **QUIET)

    assert not res.bad and res.written == {"train": 7, "val": 3}
    names = sorted(Path(f).name for fs in res.files.values() for f in fs)
    assert names == ["cap_train-00000.parquet", "cap_train-00001.parquet", "cap_train-00002.parquet",
                     "cap_val-00000.parquet"]
    assert sorted(p.name for p in out.parent.iterdir()) == names        # no staging / tmp files left
    assert [pq.ParquetFile(f).metadata.num_rows for f in res.files["train"]] == [3, 3, 1]
    assert [pq.ParquetFile(f).metadata.row_group(0).num_rows for f in res.files["train"]] == [2, 2, 1]
    train = [r["image_names"] for r in read_rows(res.files["train"])]
    val = [r["image_names"] for r in read_rows(res.files["val"])]
    assert sorted(train + val) == sorted(f"p{k}.png" for k in range(10))
    assert train == sorted(train, key=lambda s: int(s[1:-4]))          # input order kept within a split
    caption = parse_conversations(read_rows(res.files["val"])[0]["conversations"])[1]["content"]
    assert caption.startswith("caption number") and caption.endswith(", with a comma")

    # same seed -> same split; another seed -> another split
    same = convert_captions(folder, tmp_path / "s1" / "cap.parquet", captions=folder / "caps.csv",
                            val_fraction=0.3, seed=1, **QUIET)
    assert [r["image_names"] for r in read_rows(same.files["val"])] == val
    other = convert_captions(folder, tmp_path / "s2" / "cap.parquet", captions=folder / "caps.csv",
                             val_fraction=0.3, seed=2, **QUIET)
    assert [r["image_names"] for r in read_rows(other.files["val"])] != val


def test_captions_csv_header_and_val_count(tmp_path):
    folder = caption_folder(tmp_path, n=2)
    (folder / "captions.csv").write_text('file,caption\np0.png,"first, quoted"\np1.png,second\n')
    res = convert_captions(folder, tmp_path / "h.parquet", **QUIET)      # finds captions.csv by itself
    assert res.written == {"all": 2} and not res.bad
    rows = read_rows(tmp_path / "h.parquet")
    assert [parse_conversations(r["conversations"])[1]["content"] for r in rows] == ["first, quoted", "second"]
    assert (val_count(100, 0.05), val_count(10, 0.01), val_count(2, 0.9), val_count(1, 0.5)) == (5, 1, 1, 0)


def test_split_keeps_rows_of_one_picture_together(tmp_path):
    """Without dedupe, rows asking about the same picture all land in train or all in val."""
    folder = caption_folder(tmp_path, n=6)
    lines = [json.dumps({"file": f"p{k % 6}.png", "caption": f"caption {k}"}) for k in range(18)]
    (folder / "captions.jsonl").write_text("\n".join(lines))
    res = convert_captions(folder, tmp_path / "g.parquet", val_fraction=0.5, seed=0, **QUIET)
    assert res.shared_images == 12 and res.written == {"train": 9, "val": 9}      # 3 of 6 pictures each
    train = {r["image_names"] for r in read_rows(res.files["train"])}
    val = {r["image_names"] for r in read_rows(res.files["val"])}
    assert len(train) == len(val) == 3 and not train & val


# ------------------------------------------------------------------------------------------------
# Hugging Face parquet

def hf_file(tmp_path) -> Path:
    write(tmp_path / "hf" / "disk.png", png_bytes((0, 255, 0), (40, 40)))
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    table = pa.table({
        "img": pa.array([
            {"bytes": png_bytes((255, 0, 0), (64, 32)), "path": "red.png"},
            {"bytes": png_bytes((0, 0, 255), (8, 8), fmt="JPEG"), "path": None},
            None,                                                     # text-only row
            {"bytes": None, "path": "disk.png"},                      # bytes left on disk
            {"bytes": b"garbage", "path": "bad.png"},
            {"bytes": png_bytes((255, 0, 0), (64, 32)), "path": "red_again.png"},
            {"bytes": png_bytes((1, 2, 3), (8, 8)), "path": "x.png"},
        ], type=image_t),
        "q": ["What colour?", "And this?", "Say hello.", "Colour?", "Hm?", "Colour?", "Q?"],
        "a": ["Red.", "Blue.", "Hello.", "Green.", "?", "Red.", None],
        "source": ["s0", "s1", "s2", "s3", "s4", "s5", "s6"],
    })
    path = tmp_path / "hf" / "train-00000-of-00001.parquet"
    pq.write_table(table, path)
    return path


def test_hf_question_answer_columns(tmp_path):
    src = hf_file(tmp_path)
    out = tmp_path / "hf_out.parquet"
    res = convert_hf(src, out, image_column="img", question_column="q", answer_column="a",
                     keep_columns=["source"], image_format="png", dedupe=True, **QUIET)
    assert res.written == {"all": 4}
    assert [(p.row, p.kind) for p in res.bad] == [(4, "bad_image"), (6, "no_assistant")]
    assert [p.row for p in res.duplicates] == [5]
    rows = read_rows(out)
    assert [r["source"] for r in rows] == ["s0", "s1", "s2", "s3"]
    assert [r["image_names"] for r in rows] == ["red.png", "row-1", None, "disk.png"]
    assert parse_conversations(rows[0]["conversations"]) == [
        {"role": "user", "content": "<image>\nWhat colour?"}, {"role": "assistant", "content": "Red."}]
    assert parse_conversations(rows[2]["conversations"])[0]["content"] == "Say hello."    # no image, no marker
    jpeg_row = Image.open(io.BytesIO(rows[1]["image_bytes"]))
    assert jpeg_row.format == "PNG" and jpeg_row.size == (8, 8)                          # re-encoded
    assert Image.open(io.BytesIO(rows[3]["image_bytes"])).getpixel((0, 0)) == (0, 255, 0)


def test_hf_conversations_and_caption_columns(tmp_path):
    image_t = pa.struct([("bytes", pa.binary()), ("path", pa.string())])
    conv_t = pa.list_(pa.struct([("from", pa.string()), ("value", pa.string())]))
    table = pa.table({
        "image": pa.array([{"bytes": png_bytes((9, 9, 9), (300, 100)), "path": "a.png"},
                           {"bytes": png_bytes((8, 8, 8)), "path": "b.png"}], type=image_t),
        "conversations": pa.array([[{"from": "human", "value": "<image>\nWhat?"}, {"from": "gpt", "value": "Dark."}],
                                   [{"from": "human", "value": "Hi"}]], type=conv_t),
        "caption": ["a dark strip", "a dark square"],
    })
    src = tmp_path / "conv.parquet"
    pq.write_table(table, src)
    # auto-detected columns: image + conversations
    res = convert_hf(src, tmp_path / "c.parquet", max_side=150, **QUIET)
    assert res.written == {"all": 1} and [(p.row, p.kind) for p in res.bad] == [(1, "no_assistant")]
    row = read_rows(tmp_path / "c.parquet")[0]
    im = Image.open(io.BytesIO(row["image_bytes"]))
    assert im.size == (150, 50) and im.format == "PNG"                # 'keep' re-encodes in the source format
    assert parse_conversations(row["conversations"])[1]["content"] == "Dark."
    # caption column: prompt + caption
    res = convert_hf(src, tmp_path / "cap.parquet", caption_column="caption", **QUIET)
    assert res.written == {"all": 2}
    msgs = parse_conversations(read_rows(tmp_path / "cap.parquet")[1]["conversations"])
    assert msgs[0]["content"][len("<image>\n"):] in CAPTION_PROMPTS and msgs[1]["content"] == "a dark square"
    with pytest.raises(ValueError, match="not in the file"):
        convert_hf(src, tmp_path / "x.parquet", caption_column="nope", **QUIET)
    with pytest.raises(ValueError, match="go together"):
        convert_hf(src, tmp_path / "x.parquet", question_column="caption", **QUIET)


# ------------------------------------------------------------------------------------------------
# preview and stats

def stats_file(tmp_path) -> Path:
    """2 text-only rows, 3 one-image rows (64x64, 100x50, 600x300), 1 row with two 32x32 images."""
    conv = lambda q, a: json.dumps([{"role": "user", "content": q}, {"role": "assistant", "content": a}])
    rows = [
        (conv("Hi", "Hello"), None),
        (conv("<image>\nWhat is it?", "A red square."), [png_bytes((255, 0, 0), (64, 64))]),
        (conv("<image>\nAnd this?", "A wide green picture with a long answer " * 3),
         [png_bytes((0, 255, 0), (100, 50))]),
        (conv("Tell me a story about a cat who learned to read.", "Once upon a time."), None),
        (conv("<image>\nBig?", "Yes."), [png_bytes((0, 0, 255), (600, 300))]),
        (conv("<image>\n<image>\nSame?", "No."), [png_bytes((1, 1, 1), (32, 32)), png_bytes((2, 2, 2), (32, 32))]),
    ]
    table = pa.Table.from_pylist(
        [{"conversations": c, "image_bytes": imgs, "image_names": None} for c, imgs in rows],
        schema=output_schema(multi_image=True))
    path = tmp_path / "mixed.parquet"
    pq.write_table(table, path)
    return path


def test_preview_grid(tmp_path):
    src = stats_file(tmp_path)
    out = tmp_path / "grid.png"
    size = preview(src, out, n=4, thumb=64)
    layout = grid_layout(4, thumb=64)
    assert (layout.cols, layout.rows) == (2, 2)
    assert size == layout.size == (2 * (64 + 16), HEADER + 2 * layout.cell_h)
    img = Image.open(out)
    assert img.format == "PNG" and img.size == size
    # cell 0 is text-only: a grey box; cell 1 shows the solid red 64x64 picture at full size
    assert img.getpixel((8 + 2, HEADER + 8 + 2)) == TEXT_ONLY_BG
    assert img.getpixel((layout.cell_w + 8 + 32, HEADER + 8 + 32)) == (255, 0, 0)
    # text is drawn under the pictures (some dark pixels in the text block of cell 1)
    box = img.crop((layout.cell_w, HEADER + layout.text_top, 2 * layout.cell_w, HEADER + layout.cell_h))
    assert box.convert("L").getextrema()[0] < 128

    # random rows: all 6 rows, 3 columns by default -> 3 x 2
    size = preview(src, tmp_path / "r.png", n=100, random=True, seed=3, thumb=48)
    assert size == grid_layout(6, thumb=48).size and Image.open(tmp_path / "r.png").size == size


def test_stats_counts_and_tokens(tmp_path):
    from minimind_v.tokenizer import Tokenizer
    src = stats_file(tmp_path)
    tok = Tokenizer.load(TOKENIZER)
    png = tmp_path / "hist.png"
    s = stats(src, tokenizer=tok, max_length=100, png=png, quiet=True)

    assert s["rows"] == 6
    assert s["counts"] == {"text_only": 2, "one_image": 3, "multi_image": 1}
    assert s["shares"] == pytest.approx({"text_only": 2 / 6, "one_image": 3 / 6, "multi_image": 1 / 6})
    assert s["images"] == 5 and s["unreadable_images"] == 0
    assert (s["width"]["min"], s["width"]["median"], s["width"]["max"]) == (32, 64, 600)
    assert (s["height"]["min"], s["height"]["median"], s["height"]["max"]) == (32, 50, 300)
    assert s["size_buckets"] == {"<=64": 3, "65-128": 1, "129-256": 0, "257-512": 0, "513-1024": 1, ">1024": 0}
    # the shortest row is the first text-only one, rendered in ChatML
    hi = len(tok.encode("<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello<|im_end|>\n"))
    assert s["tokens"]["min"] == hi
    # every image counts image_token_len tokens: with 64 instead of 1 per image, the 5 images of the
    # 6 rows add 63 tokens each, so the mean row length grows by 63 * 5 / 6
    s1 = stats(src, tokenizer=tok, max_length=100, image_token_len=1, quiet=True)
    assert s["tokens"]["mean"] - s1["tokens"]["mean"] == pytest.approx(63 * 5 / 6)
    assert s["tokens"]["max"] >= 2 * 64 and s1["tokens"]["min"] == hi
    # over 100 tokens at 64 per image: the two-image row and the one-image row with the long answer
    assert s["over_max_length"] == 2 and s1["over_max_length"] == 0
    assert Image.open(png).size == (800, 420)


def test_stats_without_tokenizer(tmp_path):
    s = stats(stats_file(tmp_path), quiet=True)
    assert s["tokens"] is None and s["over_max_length"] is None and s["rows"] == 6


# ------------------------------------------------------------------------------------------------
# command line

def test_cli_convert_preview_stats(llava, tmp_path, capsys):
    js, img = llava
    out = tmp_path / "cli" / "data.parquet"
    rc = data_command.main(["convert", "llava", str(js), "--images", str(img), "--out", str(out), "--no-progress", "--dedupe",
                        "--report", str(tmp_path / "report.json")])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "item 3: bad_image" in printed and "wrote 5" in printed
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["rows_written"] == 5 and report["bad_counts"]["missing_image"] == 1 and report["duplicates"] == 1

    assert data_command.main(["preview", str(out), "--out", str(tmp_path / "g.png"), "--n", "4", "--thumb", "32"]) == 0
    assert Image.open(tmp_path / "g.png").size == grid_layout(4, thumb=32).size
    capsys.readouterr()
    assert data_command.main(["stats", str(out), "--json", str(tmp_path / "s.json")]) == 0
    assert "multi-image" in capsys.readouterr().out
    assert json.loads((tmp_path / "s.json").read_text())["counts"] == {"text_only": 1, "one_image": 3,
                                                                       "multi_image": 1}
    # errors: a missing input is exit code 2 with a message, not a traceback
    assert data_command.main(["convert", "captions", str(tmp_path / "nowhere"), "--out", str(out)]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as e:
        data_command.main(["convert", "hf", "--help"])
    assert e.value.code == 0 and "--question-column" in capsys.readouterr().out
