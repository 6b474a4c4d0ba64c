"""`minimind-v data emoji`: the emoji data set built from the npm packages, on the committed sample of them.

tests/fixtures/emoji/packages/ holds the three packages' layout with 77 emoji (162 pictures) and a trimmed
emojibase data.json (its README says which and why). The builder runs on it through `--packages`, and through
the npm path with a stand-in `npm` on PATH (no network): a missing npm, a failing registry and a tarball with the
wrong integrity are each one clear line.
"""
from __future__ import annotations

import hashlib
import io
import json
import shutil
import stat
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from PIL import Image

from conftest import ROOT
from minimind_v.datatools import emoji_data, emoji_npm
from minimind_v.datatools.data_command import main as data_main
from minimind_v.datatools.emoji_selection import VAL_STYLE

PACKAGES = ROOT / "tests" / "fixtures" / "emoji" / "packages"
FILES = ("emoji_train.parquet", "emoji_val.parquet", "LICENSES.md")


def _digests(folder: Path) -> dict:
    return {f: hashlib.sha256((folder / f).read_bytes()).hexdigest() for f in FILES}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("emoji") / "data"
    assert data_main(["emoji", "--out", str(out), "--packages", str(PACKAGES), "--no-progress"]) == 0
    return out


def test_twice_gives_byte_identical_files(built, tmp_path):
    again = tmp_path / "again"
    assert data_main(["emoji", "--out", str(again), "--packages", str(PACKAGES), "--no-progress"]) == 0
    assert sorted(p.name for p in again.iterdir()) == sorted(FILES)
    assert _digests(again) == _digests(built)
    # another seed changes the questions, not the pictures or the split
    other = tmp_path / "seed1"
    assert data_main(["emoji", "--out", str(other), "--packages", str(PACKAGES), "--seed", "1", "--no-progress"]) == 0
    a, b = (pq.read_table(d / "emoji_train.parquet").to_pylist() for d in (built, other))
    assert sorted(r["image_names"] for r in a) == sorted(r["image_names"] for r in b)
    assert {r["conversations"] for r in a} != {r["conversations"] for r in b}


def test_columns_counts_and_split(built):
    train = pq.read_table(built / "emoji_train.parquet")
    val = pq.read_table(built / "emoji_val.parquet")
    assert train.column_names == ["conversations", "image_bytes", "image_names"]
    assert val.column_names == ["conversations", "image_bytes", "image_names", "answer", "task"]
    meta = pq.ParquetFile(built / "emoji_train.parquet").metadata
    assert meta.row_group(0).column(1).compression == "ZSTD"
    train, val = train.to_pylist(), val.to_pylist()
    pictures = sorted(p.parent.parent.name + "/" + p.name for p in PACKAGES.glob("*/img/*/64/*.png"))
    names_t = [r["image_names"] for r in train]
    names_v = Counter(r["image_names"] for r in val)
    # every picture once: one 3-turn row in training or three one-turn rows in validation
    assert len(names_t) == len(set(names_t)) and set(names_v.values()) == {3}
    assert sorted(names_t + list(names_v)) == pictures == sorted(set(pictures))
    assert (len(train), len(val)) == (139, 69)
    # the validation emoji are the reference copy's, each in one art style; its other style is training data
    emoji, _ = emoji_data.collect(emoji_npm.check_packages(PACKAGES), seed=0)
    assert sorted(names_v) == sorted(e.image_name for e in emoji if VAL_STYLE.get(e.root) == e.style)
    for name in names_v:
        style, file = name.split("/")
        assert ("twitter" if style == "google" else "google") + "/" + file in names_t or "-1f3f" in file
    for r in train:
        conv = json.loads(r["conversations"])
        assert [m["role"] for m in conv] == ["user", "assistant"] * 3
        assert conv[0]["content"].startswith("<image>\n") and all("<image>" not in m["content"] for m in conv[1:])
    assert {r["task"] for r in val} == {"yesno", "name_yesno", "name", "name_short", "mc", "kind", "category",
                                        "category_list", "skin_tone", "flag_place"}
    for r in val:
        conv = json.loads(r["conversations"])
        assert len(conv) == 2 and conv[0]["content"].startswith("<image>\n") and r["answer"]
        if r["task"] in ("yesno", "name_yesno"):
            assert r["answer"] == conv[1]["content"][:3].rstrip(",").lower()
        elif r["task"] == "skin_tone":
            assert r["answer"] in ("light", "medium-light", "medium", "medium-dark", "dark", "default")
        else:
            assert r["answer"].lower() in conv[1]["content"].lower()


def test_known_rows(built):
    val = {(r["image_names"], r["task"]): r for r in pq.read_table(built / "emoji_val.parquet").to_pylist()}
    train = {r["image_names"]: r for r in pq.read_table(built / "emoji_train.parquet").to_pylist()}
    # the toned middle finger is a validation emoji in the Twitter style, asked the reference copy's tasks
    # (this row is the same as that copy's, byte for byte), its Google pictures are training pictures
    row = val[("twitter/1f595-1f3fc.png", "kind")]
    assert json.loads(row["conversations"]) == [
        {"role": "user", "content": "<image>\nWhat kind of thing is this?"},
        {"role": "assistant", "content": "It is a pointing hand: the middle finger emoji with medium-light skin tone."}]
    assert row["answer"] == "pointing hand"
    assert val[("twitter/1f595-1f3ff.png", "skin_tone")]["answer"] == "dark"
    assert {"google/1f595.png", "google/1f595-1f3fc.png", "google/1f595-1f3ff.png"} <= set(train)
    # a flag's name, kind and category as the reference copy words them
    conv = json.loads(train["twitter/1f1ee-1f1e9.png"]["conversations"])
    assert conv == [
        {"role": "user", "content": "<image>\nWhich country or region does this flag belong to?"},
        {"role": "assistant", "content": "This is the flag of Indonesia."},
        {"role": "user", "content": "Does this image show a flag?"},
        {"role": "assistant", "content": "Yes, this is the flag of Indonesia."},
        {"role": "user", "content": "What kind of thing is this?"},
        {"role": "assistant", "content": "It is a country flag: the flag of Indonesia."}]


def test_pictures_are_rgb_on_white(built):
    rows = pq.read_table(built / "emoji_train.parquet").to_pylist()
    row = next(r for r in rows if r["image_names"] == "google/1f4a4.png")
    img = Image.open(io.BytesIO(row["image_bytes"]))
    assert (img.format, img.mode, img.size) == ("PNG", "RGB", (64, 64))
    src = np.asarray(Image.open(PACKAGES / "emoji-datasource-google" / "img" / "google" / "64" / "1f4a4.png")
                     .convert("RGBA"))
    got = np.asarray(img)
    clear = src[..., 3] == 0
    assert clear.any() and (got[clear] == 255).all()
    solid = src[..., 3] == 255
    assert solid.any() and (got[solid] == src[..., :3][solid]).all()
    assert row["image_bytes"] == emoji_data.picture_png(
        PACKAGES / "emoji-datasource-google" / "img" / "google" / "64" / "1f4a4.png")


def test_licences_written_beside_the_data(built):
    text = (built / "LICENSES.md").read_text()
    for needle in ("Apache License 2.0", "CC BY 4.0", "Unicode License v3", "MIT", "emoji-datasource-google@16.0.0",
                   "emoji-datasource-twitter@16.0.0", "emojibase-data@17.0.0", "white background"):
        assert needle in text


def test_existing_output_is_refused_unless_overwrite(built, tmp_path, capsys):
    out = tmp_path / "data"
    out.mkdir()
    (out / "mine.txt").write_text("keep")
    assert data_main(["emoji", "--out", str(out), "--packages", str(PACKAGES), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "--overwrite" in err and (out / "mine.txt").exists()
    assert data_main(["emoji", "--out", str(out), "--packages", str(PACKAGES), "--no-progress", "--overwrite"]) == 0
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES) and _digests(out) == _digests(built)


def test_draw_selection_is_reproducible_and_keeps_styles_apart(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    for out in (a, b):
        assert data_main(["emoji", "--out", str(out), "--packages", str(PACKAGES), "--draw-selection",
                          "--seed", "3", "--no-progress"]) == 0
    assert _digests(a) == _digests(b)
    val = {r["image_names"] for r in pq.read_table(a / "emoji_val.parquet").to_pylist()}
    train = {r["image_names"] for r in pq.read_table(a / "emoji_train.parquet").to_pylist()}
    assert not val & train and all(n.replace("google/", "twitter/") not in val for n in val if n.startswith("google/"))


def _fake_npm(bin_dir: Path, script: str) -> None:
    bin_dir.mkdir()
    npm = bin_dir / "npm"
    npm.write_text("#!/bin/sh\n" + script)
    npm.chmod(npm.stat().st_mode | stat.S_IEXEC)


def test_npm_missing_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    out = tmp_path / "data"
    assert data_main(["emoji", "--out", str(out), "--cache", str(tmp_path / "cache"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "`npm` was not found" in err[0] and "--packages" in err[0]
    assert not out.exists()


@pytest.mark.parametrize("json_error", [True, False])
def test_registry_unreachable_is_one_clear_line(tmp_path, monkeypatch, capsys, json_error):
    """npm's account of the failure, from its --json error object (as npm writes it) or from stderr."""
    out = ('echo \'{"error": {"code": "ENOTFOUND", "summary": "request to https://registry.npmjs.org/x failed"}}\'\n'
           if json_error else "")
    _fake_npm(tmp_path / "bin", out + 'echo "npm error code ENOTFOUND" >&2\n'
                                      'echo "npm error request to https://registry.npmjs.org/x failed" >&2\nexit 1\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    assert data_main(["emoji", "--out", str(tmp_path / "d"), "--cache", str(tmp_path / "c"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "registry" in err[0] and "ENOTFOUND" in err[0] and "request to" in err[0]


def test_tarball_with_wrong_integrity_is_refused(tmp_path, monkeypatch, capsys):
    # a stand-in npm that "packs" a tarball whose bytes are not the pinned ones
    _fake_npm(tmp_path / "bin", 'dest=""; spec="$2"\nwhile [ $# -gt 0 ]; do [ "$1" = "--pack-destination" ] && '
                                'dest="$2"; shift; done\nname="${spec%@*}"; ver="${spec##*@}"\n'
                                'echo tampered > "$dest/$name-$ver.tgz"\n'
                                'echo "[{\\"filename\\": \\"$name-$ver.tgz\\"}]"\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    cache = tmp_path / "cache"
    assert data_main(["emoji", "--out", str(tmp_path / "d"), "--cache", str(cache), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "integrity" in err[0] and "emoji-datasource-google@16.0.0" in err[0]
    assert not list(cache.glob("*.tgz")) and not (tmp_path / "d").exists()


def test_cache_is_used_without_npm(tmp_path, monkeypatch, built):
    """A cache that already holds the unpacked packages needs no npm (and so no network)."""
    shutil.copytree(PACKAGES, tmp_path / "cache" / "packages")
    monkeypatch.setenv("PATH", str(tmp_path / "nothing"))
    assert data_main(["emoji", "--out", str(tmp_path / "d"), "--cache", str(tmp_path / "cache"), "--no-progress"]) == 0
    assert _digests(tmp_path / "d") == _digests(built)


def test_pinned_tarball_is_unpacked_into_the_cache(tmp_path, monkeypatch):
    """The npm path end to end with a stand-in npm: a tarball laid out as npm packs it, whose integrity is
    then pinned, unpacks to CACHE/packages/NAME."""
    tgz = tmp_path / "emojibase-data-17.0.0.tgz"
    with tarfile.open(tgz, "w:gz") as tar:
        for f in sorted((PACKAGES / "emojibase-data").rglob("*")):
            if f.is_file():
                tar.add(f, arcname="package/" + f.relative_to(PACKAGES / "emojibase-data").as_posix())
    cache = tmp_path / "cache"
    cache.mkdir()
    for name in ("emoji-datasource-google", "emoji-datasource-twitter"):
        shutil.copytree(PACKAGES / name, cache / "packages" / name)
    _fake_npm(tmp_path / "bin", f'/bin/cp "{tgz}" "$6/"\necho \'[{{"filename": "{tgz.name}"}}]\'\n')
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    monkeypatch.setitem(emoji_npm.PACKAGES, "emojibase-data", ("17.0.0", emoji_npm.integrity(tgz)))
    got = emoji_npm.fetch_packages(cache, progress=False)
    assert got["emojibase-data"] == cache / "packages" / "emojibase-data"
    assert (got["emojibase-data"] / "en" / "data.json").read_bytes() == \
        (PACKAGES / "emojibase-data" / "en" / "data.json").read_bytes()


def test_wrong_package_version_is_one_clear_line(tmp_path, capsys):
    shutil.copytree(PACKAGES, tmp_path / "p")
    meta = tmp_path / "p" / "emojibase-data" / "package.json"
    meta.write_text(json.dumps({**json.loads(meta.read_text()), "version": "16.0.3"}))
    assert data_main(["emoji", "--out", str(tmp_path / "d"), "--packages", str(tmp_path / "p"), "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "emojibase-data@16.0.3" in err[0] and "17.0.0" in err[0]


def test_reference_selection_is_whole():
    """emoji_selection.py: 154 validation emoji, two of five tones per toned emoji and style, and three
    distinct tasks for each of the 194 validation pictures (582 rows), each picture in its emoji's style."""
    from minimind_v.datatools.emoji_selection import TONES, VAL_ROWS
    assert len(VAL_STYLE) == 154 and set(VAL_STYLE.values()) == {"google", "twitter"}
    assert {len(v) for v in TONES.values()} == {323} and TONES["google"].keys() == TONES["twitter"].keys()
    assert all(len(t) == 2 and t[0] < t[1] and set(t) <= set("12345") for v in TONES.values() for t in v.values())
    per_picture: dict = {}
    for name, task in VAL_ROWS:
        per_picture.setdefault(name, []).append(task)
    assert len(VAL_ROWS) == 582 and len(per_picture) == 194
    assert all(len(set(t)) == 3 == len(t) for t in per_picture.values())
    roots = {k.lower().replace("-fe0f", ""): style for k, style in VAL_STYLE.items()}
    for name in per_picture:
        style, file = name.split("/")
        parts = [c for c in file[:-4].split("-") if c != "fe0f"]
        toneless = "-".join(c for c in parts if c not in ("1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff")) or parts[0]
        assert roots.get(toneless) == style, name       # (a skin-tone swatch is its own emoji)
