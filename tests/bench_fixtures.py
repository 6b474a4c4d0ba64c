"""Small local copies of the benchmarks in their published parquet layout, with pictures drawn here.

The columns and types are those of the published files that lmms-eval's task definitions read (MMStar:
Lin-Chen/MMStar; POPE, MME, ScienceQA-IMG, AI2D: the lmms-lab(-encoder) copies): a picture is Hugging Face's Image
feature, a struct {bytes, path}, and the file carries the `huggingface` features metadata that `datasets`
reads to decode it (which is how lmms-eval gets a PIL image from a local parquet file). `task_yaml` writes an
lmms-eval task definition that includes the installed task's own YAML and only points it at the local file.
"""
from __future__ import annotations

import io
import json
import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image, ImageDraw

COLOURS = {"red": (220, 30, 30), "green": (30, 180, 40), "blue": (30, 60, 220), "yellow": (230, 210, 20)}
SHAPES = ("circle", "square")
MMSTAR_L2 = {
    "coarse perception": ["image scene and topic", "image style & quality", "image emotion"],
    "fine-grained perception": ["object counting", "recognition", "localization"],
    "instance reasoning": ["single-instance reasoning", "cross-instance attribute reasoning",
                           "cross-instance relation reasoning"],
    "logical reasoning": ["code & sequence reasoning", "diagram reasoning", "common reasoning"],
    "science & technology": ["biology & chemistry & physics", "electronics & energy & mechanical eng.",
                             "geography & earth science & agriculture"],
    "math": ["geometry", "numeric commonsense and calculation", "statistical reasoning"],
}
MME_CATEGORIES = ("existence", "count", "color", "OCR", "commonsense_reasoning", "code_reasoning")
POPE_SPLITS = ("adversarial", "popular", "random")


def picture(colour: str, shape: str, size: int = 32) -> bytes:
    im = Image.new("RGB", (size, size), (255, 255, 255))
    d = ImageDraw.Draw(im)
    box = (size // 4, size // 4, 3 * size // 4, 3 * size // 4)
    (d.ellipse if shape == "circle" else d.rectangle)(box, fill=COLOURS[colour])
    b = io.BytesIO()
    im.save(b, "PNG")
    return b.getvalue()


def _image(data: bytes, name: str) -> dict:
    return {"bytes": data, "path": name}


_STR, _INT, _IMG = {"dtype": "string", "_type": "Value"}, {"dtype": "int64", "_type": "Value"}, {"_type": "Image"}
_STRS = {"feature": {"dtype": "string", "_type": "Value"}, "_type": "Sequence"}
IMAGE_TYPE = pa.struct([("bytes", pa.binary()), ("path", pa.string())])


def _write(path: Path, columns: dict, types: dict, features: dict) -> Path:
    schema = pa.schema([(k, types.get(k, pa.string())) for k in columns],
                       metadata={"huggingface": json.dumps({"info": {"features": features}})})
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.table(columns, schema=schema), path)
    return path


def _pic_for(i: int, rng: random.Random, corrupt) -> tuple[str, str, bytes]:
    colour, shape = rng.choice(list(COLOURS)), rng.choice(SHAPES)
    return colour, shape, (b"this is not a picture" if i in corrupt else picture(colour, shape))


def mmstar(path: Path, n: int = 24, seed: int = 0, corrupt=()) -> Path:
    rng = random.Random(seed)
    pairs = [(c, l2) for c, l2s in MMSTAR_L2.items() for l2 in l2s]
    cols = {k: [] for k in ("index", "question", "image", "answer", "category", "l2_category", "meta_info")}
    for i in range(n):
        colour, shape, data = _pic_for(i, rng, corrupt)
        opts = list(COLOURS)
        rng.shuffle(opts)
        cat, l2 = pairs[i % len(pairs)]
        q = (f"What colour is the {shape}?\nOptions: " + ", ".join(f"{k}: {o}" for k, o in zip("ABCD", opts)))
        cols["index"].append(i)
        cols["question"].append(q)
        cols["image"].append(_image(data, f"{i}.png"))
        cols["answer"].append("ABCD"[opts.index(colour)])
        cols["category"].append(cat)
        cols["l2_category"].append(l2)
        cols["meta_info"].append({"source": "synthetic", "split": "val", "image_path": f"images/{i}.png"})
    meta = pa.struct([("source", pa.string()), ("split", pa.string()), ("image_path", pa.string())])
    feats = {"index": _INT, "question": _STR, "image": _IMG, "answer": _STR, "category": _STR, "l2_category": _STR,
             "meta_info": {"source": _STR, "split": _STR, "image_path": _STR}}
    return _write(path, cols, {"index": pa.int64(), "image": IMAGE_TYPE, "meta_info": meta}, feats)


def pope(path: Path, n: int = 24, seed: int = 0, corrupt=()) -> Path:
    rng = random.Random(seed)
    cols = {k: [] for k in ("id", "question_id", "question", "answer", "image_source", "image", "category")}
    for i in range(n):
        colour, shape, data = _pic_for(i, rng, corrupt)
        asked = colour if rng.random() < 0.5 else rng.choice([c for c in COLOURS if c != colour])
        cols["id"].append(str(i))
        cols["question_id"].append(str(i + 1))
        cols["question"].append(f"Is there a {asked} {shape} in the image?")
        cols["answer"].append("yes" if asked == colour else "no")
        cols["image_source"].append(f"synthetic_{i}")
        cols["image"].append(_image(data, f"{i}.png"))
        cols["category"].append(POPE_SPLITS[i % 3])
    feats = {k: _STR for k in cols} | {"image": _IMG}
    return _write(path, cols, {"image": IMAGE_TYPE}, feats)


def mme(path: Path, n: int = 24, seed: int = 0, corrupt=()) -> Path:
    """n // 2 pictures, two questions each (one true, one false), as MME asks them."""
    rng = random.Random(seed)
    pictures = n // 2
    cols = {k: [] for k in ("question_id", "image", "question", "answer", "category")}
    for p in range(pictures):
        colour, shape, data = _pic_for(p, rng, corrupt)
        cat = MME_CATEGORIES[p % len(MME_CATEGORIES)]
        other = rng.choice([c for c in COLOURS if c != colour])
        for k, (asked, ans) in enumerate(rng.sample([(colour, "Yes"), (other, "No")], 2)):
            cols["question_id"].append(f"{cat}/{p:06d}.png")
            cols["image"].append(_image(data, f"{p}.png"))
            cols["question"].append(f"Is the {shape} {asked}? Please answer yes or no.")
            cols["answer"].append(ans)
            cols["category"].append(cat)
    feats = {k: _STR for k in cols} | {"image": _IMG}
    return _write(path, cols, {"image": IMAGE_TYPE}, feats)


def scienceqa(path: Path, n: int = 24, seed: int = 0, corrupt=()) -> Path:
    rng = random.Random(seed)
    names = ("image", "question", "choices", "answer", "hint", "task", "grade", "subject", "topic", "category",
             "skill", "lecture", "solution")
    cols = {k: [] for k in names}
    for i in range(n):
        colour, shape, data = _pic_for(i, rng, corrupt)
        opts = rng.sample(list(COLOURS), 2 + i % 3)
        if colour not in opts:
            opts[rng.randrange(len(opts))] = colour
        cols["image"].append(_image(data, f"{i}.png"))
        cols["question"].append(f"Which colour is the {shape}?")
        cols["choices"].append(opts)
        cols["answer"].append(opts.index(colour))
        cols["hint"].append("" if i % 2 else f"The picture shows one {shape}.")
        for k, v in (("task", "closed choice"), ("grade", "grade2"), ("subject", "natural science"),
                     ("topic", "colours"), ("category", "Colours"), ("skill", "Identify colours"),
                     ("lecture", ""), ("solution", "")):
            cols[k].append(v)
    feats = {k: _STR for k in names} | {"image": _IMG, "choices": _STRS, "answer": {"dtype": "int8", "_type": "Value"}}
    return _write(path, cols, {"image": IMAGE_TYPE, "choices": pa.list_(pa.string()), "answer": pa.int8()}, feats)


def ai2d(path: Path, n: int = 24, seed: int = 0, corrupt=()) -> Path:
    rng = random.Random(seed)
    cols = {k: [] for k in ("question", "options", "answer", "image")}
    for i in range(n):
        colour, shape, data = _pic_for(i, rng, corrupt)
        opts = list(COLOURS)
        rng.shuffle(opts)
        cols["question"].append(f"What colour is the {shape} in the diagram?")
        cols["options"].append(opts)
        cols["answer"].append(str(opts.index(colour)))
        cols["image"].append(_image(data, f"{i}.png"))
    feats = {"question": _STR, "options": _STRS, "answer": _STR, "image": _IMG}
    return _write(path, cols, {"image": IMAGE_TYPE, "options": pa.list_(pa.string())}, feats)


WRITERS = {"mmstar": mmstar, "pope": pope, "mme": mme, "scienceqa-img": scienceqa, "ai2d": ai2d}
# benchmark -> (the installed task's YAML, relative to lmms_eval/tasks; the split it reads)
TASK_YAML = {"mmstar": ("mmstar/mmstar.yaml", "val"), "pope": ("pope/pope.yaml", "test"),
             "mme": ("mme/mme.yaml", "test"), "scienceqa-img": ("scienceqa/scienceqa_img.yaml", "test"),
             "ai2d": ("ai2d/ai2d.yaml", "test")}


def task_yaml(bench: str, parquet: Path, out_dir: Path) -> str:
    """Write OUT_DIR/<task>_local.yaml: the installed lmms-eval task, reading `parquet`. Returns the task name."""
    import lmms_eval.tasks
    rel, split = TASK_YAML[bench]
    base = Path(lmms_eval.tasks.__file__).parent / rel
    name = base.stem + "_local"
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / f"{name}.yaml").write_text(
        f"include: {base}\n"
        f"task: {name}\n"
        f"dataset_path: parquet\n"
        f"dataset_name: null\n"
        f"dataset_kwargs:\n"
        f"  data_files:\n"
        f"    {split}: {parquet}\n"
        f"test_split: {split}\n")
    return name


def write_rows(path: Path, rows: list[dict]) -> Path:
    """Hand-made rows in the published layout: `image` (bytes or None) becomes the Image struct, lists of
    strings a string list, ints int64, everything else a string."""
    names = list(rows[0])
    types, feats = {}, {}
    for k in names:
        v = next((r[k] for r in rows if r[k] is not None), "")
        if k == "image":
            types[k], feats[k] = IMAGE_TYPE, _IMG
        elif isinstance(v, list):
            types[k], feats[k] = pa.list_(pa.string()), _STRS
        elif isinstance(v, int):
            types[k], feats[k] = pa.int64(), _INT
        else:
            feats[k] = _STR
    cols = {k: [(_image(r[k], f"{i}.png") if r[k] is not None else None) if k == "image" else r[k]
                for i, r in enumerate(rows)] for k in names}
    return _write(path, cols, types, feats)


def steered_model(out: Path, seed: int = 1) -> Path:
    """A tiny model folder (random weights) whose greedy replies are one short answer token, picked by the
    picture and the prompt: "yes", "no", "A".."D", then the end of the reply. The output rows of every other
    token are shrunk; the answer tokens' input embeddings carry a direction that only the end token reads, so
    a reply stops after its first token. Benchmarks then score something other than empty replies."""
    import torch

    from minimind_v.datatools import synth
    from minimind_v.formats.folder import save_model
    from minimind_v.tokenizer import train_tokenizer
    from conftest import make_tiny_model
    texts = list(synth.corpus(300, 0)) + ["yes no A. B. C. D."] * 200
    tok = train_tokenizer(texts, vocab_size=400, out=out / "tokenizer", show_progress=False)
    answers = [tok.encode(w)[0] for w in ("yes", "no", "A", "B", "C", "D")]
    m = make_tiny_model(tok, seed=seed, tie_word_embeddings=False)
    with torch.no_grad():
        emb, head = m.model.embed_tokens.weight, m.lm_head.weight
        u = torch.randn(emb.shape[1], generator=torch.Generator().manual_seed(seed))
        u /= u.norm()
        keep = torch.zeros(head.shape[0], dtype=torch.bool)
        keep[answers] = True
        head[~keep] *= 0.01
        head[keep] *= 4
        emb[~keep] -= (emb[~keep] @ u)[:, None] * u
        head[tok.eos_id] = 50 * u
        emb[answers] += 20 * u
    save_model(m, out / "model", tok)
    return out / "model"
