"""Build the emoji training and validation sets (`minimind-v data emoji --out DIR`) from the npm packages.

What it writes (DIR/emoji_train.parquet, DIR/emoji_val.parquet, DIR/LICENSES.md):

- pictures: every Noto (`google/`) and Twemoji (`twitter/`) 64 x 64 PNG of emoji-datasource 16.0.0 that
  emojibase-data 17.0.0 names, made RGB by compositing onto white (`Image.alpha_composite`) and stored as
  PNG with `optimize=True`. Emoji with skin tones keep their toneless picture and two of the five single
  tones per art style; the two-person, two-tone pictures are left out;
- emoji_train: one row per picture, a 3-turn conversation about it (name, kind, category, yes/no, multiple
  choice, skin tone, flags, keywords), `<image>\\n` before the first question;
- emoji_val: 154 of the 1,911 emoji (all tones of one emoji together), each in ONE art style only (the other
  style's pictures of it stay in training), three single-turn rows per picture with `answer` and `task`.

Which tones, which validation emoji, and which three tasks each validation picture is asked (in which row
order): those of the reference copy (`emoji_selection.py`, read from its files), so the same pictures land
in the same split and emoji_val scores the same tasks; `reference_selection=False` (`--draw-selection`)
draws them from the seed instead (about 8% of the emoji to validation).

Wording, kinds and answer forms are those of the reference copy this project has used (docs/emoji.md),
recovered from it: the same templates, the same `kind` phrase per CLDR subgroup (`KINDS`), the same
concepts for yes/no (`CONCEPTS`). The draws (which questions a picture gets, their wording and
distractors, the row order) come from `random.Random` seeded by a string naming the seed, the style and
the emoji, so each draw depends on nothing else: the output is byte-identical for the same packages,
seed and Pillow/pyarrow versions (pyarrow writes its version into the file), and adding an emoji does
not reshuffle the others. The parquet files are written with fixed writer
options (zstd, 512-row groups, dictionary encoding) and hold no timestamp.
"""
from __future__ import annotations

import io
import json
import random
import re
from dataclasses import dataclass, field
from pathlib import Path

STYLES = ("google", "twitter")
VAL_FRACTION = 0.08
ROW_GROUP_SIZE = 512
TONES = {1: "light", 2: "medium-light", 3: "medium", 4: "medium-dark", 5: "dark"}
CATEGORIES = {"smileys-emotion": "Smileys & Emotion", "people-body": "People & Body", "component": "Component",
              "animals-nature": "Animals & Nature", "food-drink": "Food & Drink", "travel-places": "Travel & Places",
              "activities": "Activities", "objects": "Objects", "symbols": "Symbols", "flags": "Flags"}
LISTED_CATEGORIES = [c for c in CATEGORIES.values() if c != "Component"]
# CLDR subgroup -> the kind of thing it holds, with its article ("a mammal").
KINDS = {
    "face-smiling": "a smiling face", "face-affection": "a face showing affection", "face-tongue": "a face with tongue",
    "face-hand": "a face with hand", "face-neutral-skeptical": "a neutral or skeptical face",
    "face-sleepy": "a sleepy face", "face-unwell": "an unwell face", "face-hat": "a face with hat",
    "face-glasses": "a face with glasses", "face-concerned": "a concerned face", "face-negative": "a negative face",
    "face-costume": "a costume face", "cat-face": "a cat face", "monkey-face": "a monkey face", "heart": "a heart",
    "emotion": "an emotion symbol", "hand-fingers-open": "a hand with open fingers",
    "hand-fingers-partial": "a hand gesture", "hand-single-finger": "a pointing hand",
    "hand-fingers-closed": "a closed hand", "hands": "a pair of hands", "hand-prop": "a hand holding something",
    "body-parts": "a body part", "person": "a person", "person-gesture": "a person gesturing",
    "person-role": "a person in a role or job", "person-fantasy": "a fantasy character",
    "person-activity": "a person doing an activity", "person-sport": "a person playing sport",
    "person-resting": "a person resting", "family": "a family or couple", "person-symbol": "a person symbol",
    "skin-tone": "a skin tone swatch", "hair-style": "a hair style", "animal-mammal": "a mammal",
    "animal-bird": "a bird", "animal-amphibian": "an amphibian", "animal-reptile": "a reptile",
    "animal-marine": "a sea animal", "animal-bug": "a bug", "plant-flower": "a flower", "plant-other": "a plant",
    "food-fruit": "a fruit", "food-vegetable": "a vegetable", "food-prepared": "a prepared food",
    "food-asian": "an Asian food", "food-sweet": "a sweet food", "drink": "a drink", "dishware": "a piece of dishware",
    "place-map": "a map", "place-geographic": "a geographic place", "place-building": "a building",
    "place-religious": "a religious place", "place-other": "a place or scene",
    "transport-ground": "a ground transport item", "transport-water": "a water transport item",
    "transport-air": "an air transport item", "hotel": "a hotel item", "time": "a time item",
    "sky-weather": "a sky or weather item", "event": "an event item", "award-medal": "an award or medal",
    "sport": "a sport item", "game": "a game item", "arts-crafts": "an arts and crafts item",
    "clothing": "a piece of clothing", "sound": "a sound item", "music": "a music item",
    "musical-instrument": "a musical instrument", "phone": "a phone", "computer": "a computer item",
    "light-video": "a light or video item", "book-paper": "a book or paper", "money": "a money item",
    "mail": "a mail item", "writing": "a writing item", "office": "an office item", "lock": "a lock or key",
    "tool": "a tool", "science": "a science item", "medical": "a medical item", "household": "a household item",
    "other-object": "an object", "transport-sign": "a transport sign", "warning": "a warning sign",
    "arrow": "an arrow", "religion": "a religious symbol", "zodiac": "a zodiac sign",
    "av-symbol": "an audio or video symbol", "gender": "a gender symbol", "math": "a math symbol",
    "punctuation": "a punctuation symbol", "currency": "a currency symbol", "other-symbol": "a symbol",
    "keycap": "a keycap", "alphanum": "an alphanumeric symbol", "geometric": "a geometric shape", "flag": "a flag",
    "country-flag": "a country flag", "subdivision-flag": "a regional flag",
}
_FACES = ("face-smiling", "face-affection", "face-tongue", "face-hand", "face-neutral-skeptical", "face-sleepy",
          "face-unwell", "face-hat", "face-glasses", "face-concerned", "face-negative", "face-costume", "cat-face",
          "monkey-face")
_SYMBOLS = ("transport-sign", "warning", "arrow", "religion", "zodiac", "av-symbol", "gender", "math", "punctuation",
            "currency", "other-symbol", "keycap", "alphanum", "geometric")
# yes/no concept -> the CLDR subgroups whose emoji it describes ("Is this an animal?")
CONCEPTS = {
    "a person": ("person", "person-gesture", "person-role", "person-fantasy", "person-activity", "person-sport",
                 "person-resting", "family"),
    "a face": _FACES,
    "a hand": ("hand-fingers-open", "hand-fingers-partial", "hand-single-finger", "hand-fingers-closed", "hands",
               "hand-prop"),
    "an animal": ("animal-mammal", "animal-bird", "animal-amphibian", "animal-reptile", "animal-marine", "animal-bug"),
    "a plant": ("plant-flower", "plant-other"),
    "food or a drink": ("food-fruit", "food-vegetable", "food-prepared", "food-asian", "food-sweet", "drink"),
    "a drink": ("drink",),
    "a building": ("place-building", "place-religious"),
    "a vehicle": ("transport-ground", "transport-water", "transport-air"),
    "sky or weather": ("sky-weather",),
    "a clock or watch": ("time",),
    "sports equipment": ("sport",),
    "a musical instrument": ("musical-instrument",),
    "an electronic device": ("computer", "phone"),
    "a piece of clothing": ("clothing",),
    "a tool": ("tool",),
    "a heart": ("heart",),
    "a geometric shape": ("geometric",),
    "an arrow": ("arrow",),
    "a letter or number": ("alphanum", "keycap"),
    "a flag": ("flag", "country-flag"),
    "a symbol": _SYMBOLS,
}
# emoji of those subgroups that are not what the concept names (the reference copy answers "Is this a
# vehicle?" with no for the railway track, "Is this a building?" with no for the wedding)
NOT_CONCEPT = {
    "a vehicle": {"railway track", "motorway", "bus stop", "fuel pump", "oil drum", "wheel", "police car light",
                  "horizontal traffic light", "vertical traffic light", "stop sign", "construction", "anchor",
                  "ring buoy", "seat"},
    "a building": {"wedding", "brick", "rock", "wood", "Statue of Liberty"},
}
QUESTIONS = {
    "name": ("Name this emoji.", "What emoji is this?", "What does this emoji show?", "What is shown in the image?",
             "What is this?"),
    "name_short": ("What is this? Reply with just the name.", "Which emoji is this? Answer with its name only."),
    "describe": ("Describe this image.", "Describe this emoji in detail.", "What can you tell me about this picture?"),
    "kind": ("What type of emoji is this?", "What kind of thing is this?"),
    "category": ("Which category does this emoji belong to?", "What emoji category is this in?"),
    "category_list": ("Which of these categories does this emoji belong to: {}?",),
    "skin_tone": ("Which skin tone is shown?", "What skin tone does this emoji have?"),
    "keywords": ("Give some keywords for this emoji.", "Which words are associated with this emoji?"),
    "flag_place": ("Whose flag is this?", "Which country or region does this flag belong to?"),
    "yesno": ("Is this {}?", "Does this image show {}?"),
    "name_yesno": ("Is this the {}?", "Does this image show the {}?"),
    "mc": ("Which of these is shown: {}?", "Choose the right name for this emoji: {}."),
}
# how often a picture is asked each kind of question (relative weights; three distinct kinds per training
# row, three distinct kinds in a validation picture's three rows), fitted so that the share of rows asking
# each kind matches the reference copy's (train: yes/no 49%, describe 45%, name 40%, ...)
TRAIN_WEIGHTS = {"yesno": 5.63, "describe": 5.1, "name": 4.4, "name_yesno": 3.07, "kind": 2.47, "category": 2.33,
                 "mc": 1.98, "keywords": 1.54, "category_list": 1.61, "name_short": 1.32, "skin_tone": 6.06,
                 "flag_place": 6.93}
VAL_WEIGHTS = {"yesno": 5.39, "name": 4.15, "kind": 3.63, "name_yesno": 4.43, "category": 3.49, "mc": 2.12,
               "category_list": 1.56, "name_short": 1.34, "skin_tone": 7.48, "flag_place": 9.01}


@dataclass
class Emoji:
    """One picture's facts: `name` without tone ('woman kneeling: facing right', 'flag of Chad'), `subject`
    as the answers say it ('woman kneeling: facing right emoji with dark skin tone', 'flag of Chad')."""
    style: str
    file: str                 # '1f469-1f3ff-200d-1f9ce-200d-27a1-fe0f.png'
    root: str                 # the toneless emoji's hexcode: all its tones share it (and the val split)
    name: str
    subject: str
    category: str
    subgroup: str
    kind: str
    tone: int | None
    has_tones: bool
    tags: list = field(default_factory=list)

    @property
    def image_name(self) -> str:
        return f"{self.style}/{self.file}"


def _display(label: str) -> str:
    """The name as the answers use it: 'flag: Chad' -> 'flag of Chad', 'keycap: 8' -> 'keycap 8'."""
    if label.startswith("flag: "):
        return "flag of " + label[len("flag: "):]
    return "keycap " + label[len("keycap: "):] if label.startswith("keycap: ") else label


def _subject(name: str) -> str:
    return name if name.startswith("flag of ") else name + " emoji"


def _norm(hexcode: str) -> str:
    return "-".join(c for c in hexcode.lower().split("-") if c != "fe0f")


def load_emojibase(folder: Path) -> tuple[dict, dict, dict]:
    """(entry by lower-case hexcode, entry by hexcode without FE0F, meta/groups.json) of emojibase-data;
    each skin-tone entry carries its toneless entry as 'parent'."""
    data = json.loads((folder / "en" / "data.json").read_text(encoding="utf-8"))
    meta = json.loads((folder / "meta" / "groups.json").read_text(encoding="utf-8"))
    exact, loose = {}, {}
    for e in data:
        for x in [e] + [{**s, "parent": e} for s in e.get("skins", [])]:
            exact[x["hexcode"].lower()] = x
            loose.setdefault(_norm(x["hexcode"]), x)
    return exact, loose, meta


def _rng(seed: int, *what) -> random.Random:
    return random.Random(":".join(str(w) for w in (seed,) + what))


def collect(packages: dict[str, Path], seed: int, reference: bool = True) -> tuple[list[Emoji], int]:
    """Every picture to use, in a fixed order (style, then file name), and how many files no emojibase entry
    names (left out). Skin tones: the toneless picture and two single tones per style and emoji, those of the
    reference copy (`emoji_selection.TONES`) when `reference` and the emoji is listed there, else drawn."""
    from .emoji_selection import TONES as REFERENCE_TONES
    exact, loose, meta = load_emojibase(packages["emojibase-data"])
    groups, subgroups = meta["groups"], meta["subgroups"]
    out, unnamed = [], 0
    for style in STYLES:
        folder = packages[f"emoji-datasource-{style}"] / "img" / style / "64"
        files = sorted(p.name for p in folder.glob("*.png"))
        by_root: dict[str, list] = {}
        for f in files:
            code = f[:-4]
            e = exact.get(code) or loose.get(_norm(code))
            if e is None or "group" not in e:
                unnamed += 1
                continue
            if isinstance(e.get("tone"), list):       # two people, two tones: left out
                continue
            base = e.get("parent", e)
            by_root.setdefault(base["hexcode"], []).append((f, e, base))
        for root in sorted(by_root):
            items = by_root[root]
            toned = sorted(e["tone"] for f, e, _ in items if e.get("tone") is not None)
            pinned = REFERENCE_TONES[style].get(root) if reference else None
            keep = ({int(t) for t in pinned} if pinned is not None
                    else set(_rng(seed, "tones", style, root).sample(toned, min(2, len(toned)))))
            for f, e, base in items:
                if e.get("tone") is not None and e["tone"] not in keep:
                    continue
                name = _display(base["label"])
                tone = e.get("tone")
                subject = _subject(name) + (f" with {TONES[tone]} skin tone" if tone else "")
                sub = subgroups[str(base["subgroup"])]
                out.append(Emoji(style=style, file=f, root=root, name=name, subject=subject,
                                 category=CATEGORIES[groups[str(base["group"])]], subgroup=sub,
                                 kind=KINDS.get(sub, "a symbol"), tone=tone, has_tones="skins" in base,
                                 tags=list(base.get("tags", []))))
    out.sort(key=lambda x: (x.style, x.file))
    return out, unnamed


def split(emoji: list[Emoji], seed: int, reference: bool = True) -> tuple[list[Emoji], list[Emoji]]:
    """(train, val): an emoji (all its tones) is a validation emoji in one art style, its pictures in the
    other style stay in training. With `reference`, the reference copy's validation emoji
    (`emoji_selection.VAL_STYLE`); else each emoji is drawn with probability VAL_FRACTION, and its style."""
    from .emoji_selection import VAL_STYLE
    val_style = {}
    for root in sorted({e.root for e in emoji}):
        if reference:
            if root in VAL_STYLE:
                val_style[root] = VAL_STYLE[root]
            continue
        r = _rng(seed, "split", root)
        if r.random() < VAL_FRACTION:
            val_style[root] = r.choice(STYLES)
    train = [e for e in emoji if val_style.get(e.root) != e.style]
    val = [e for e in emoji if val_style.get(e.root) == e.style]
    return train, val


def _or_list(items: list[str]) -> str:
    return ", ".join(items[:-1]) + " or " + items[-1]


class Asker:
    """Questions and answers about one picture, every draw from the given Random."""

    def __init__(self, everyone: list[Emoji]):
        # the toneless emoji of each subgroup and category, by name (distractors for mc and name_yesno)
        seen, self.by_sub, self.by_cat = set(), {}, {}
        for e in everyone:
            if e.tone is None and e.name not in seen:
                seen.add(e.name)
                self.by_sub.setdefault(e.subgroup, []).append(e)
                self.by_cat.setdefault(e.category, []).append(e)

    def tasks(self, e: Emoji, weights: dict, drawn: bool = True) -> dict:
        """The tasks that can be asked about `e` (with their weights). Flags are asked whose flag it is
        instead of yes/no name questions when the task is drawn (as in the reference copy's training rows);
        its validation rows ask some flags a name question, which `drawn=False` allows."""
        flag = e.subgroup in ("country-flag", "subdivision-flag")
        ok = {t: w for t, w in weights.items()
              if (t != "skin_tone" or e.has_tones) and (t != "flag_place" or flag)
              and (t != "keywords" or e.tags) and (t != "category_list" or e.category in LISTED_CATEGORIES)
              and (t != "name_yesno" or not (flag and drawn))
              and (t not in ("mc", "name_yesno") or len(self._pool(e)) >= (3 if t == "mc" else 1))}
        return ok

    def pick_tasks(self, e: Emoji, weights: dict, n: int, rng: random.Random) -> list[str]:
        ok = self.tasks(e, weights)
        picked = []
        for _ in range(min(n, len(ok))):
            names = sorted(ok)
            t = rng.choices(names, weights=[ok[k] for k in names])[0]
            picked.append(t)
            del ok[t]
        return picked

    def _pool(self, e: Emoji, k: int = 3) -> list[Emoji]:
        """Other emoji to name instead of `e`: its subgroup's, and its category's when those are fewer than k."""
        pool = [x for x in self.by_sub.get(e.subgroup, []) if x.name != e.name]
        if len(pool) < k:
            pool += [x for x in self.by_cat.get(e.category, []) if x.name != e.name and x.subgroup != e.subgroup]
        return pool

    def _others(self, e: Emoji, k: int, rng: random.Random) -> list[Emoji]:
        pool = self._pool(e, k)
        return rng.sample(pool, min(k, len(pool)))

    def ask(self, task: str, e: Emoji, rng: random.Random) -> tuple[str, str, str]:
        """(question, reply, short answer for scoring)."""
        q = rng.choice(QUESTIONS[task])
        if task == "name":
            return q, f"This is the {e.subject}.", e.name
        if task == "name_short":
            return q, e.name, e.name
        if task == "describe":
            words = [t for t in e.tags if t.lower() not in e.name.lower()][:5]
            more = f" Related words: {', '.join(words)}." if words else ""
            return q, f"The image shows the {e.subject}. It is {e.kind} from the {e.category} category.{more}", e.name
        if task == "kind":
            return q, f"It is {e.kind}: the {e.subject}.", re.sub(r"^an? ", "", e.kind)
        if task == "category":
            return q, f"It belongs to the {e.category} category.", e.category
        if task == "category_list":
            cats = list(LISTED_CATEGORIES)
            rng.shuffle(cats)
            return q.format(_or_list(cats)), e.category, e.category
        if task == "skin_tone":
            if e.tone:
                return q, f"It has a {TONES[e.tone]} skin tone.", TONES[e.tone]
            return q, "It has the default yellow skin tone (no skin-tone modifier).", "default"
        if task == "keywords":
            return q, ", ".join(e.tags[:6]) + ".", ""
        if task == "flag_place":
            return q, f"This is the {e.subject}.", e.name[len("flag of "):]
        if task == "yesno":
            yes = [c for c, subs in CONCEPTS.items() if e.subgroup in subs and e.name not in NOT_CONCEPT.get(c, ())]
            no = [c for c in CONCEPTS if c not in yes]
            if yes and rng.random() < 0.5:
                return q.format(rng.choice(yes)), f"Yes, this is the {e.subject}.", "yes"
            return q.format(rng.choice(no)), f"No, this is the {e.subject}.", "no"
        if task == "name_yesno":
            others = self._others(e, 1, rng)
            if not others or rng.random() < 0.5:
                return q.format(_subject(e.name)), f"Yes, this is the {e.subject}.", "yes"
            other = _subject(others[0].name)
            return q.format(other), f"No, this is the {e.subject}, not the {other}.", "no"
        if task == "mc":
            options = [e.name] + [x.name for x in self._others(e, 3, rng)]
            rng.shuffle(options)
            return q.format(_or_list(options)), e.name, e.name
        raise ValueError(f"unknown task {task!r}")


def train_row(e: Emoji, asker: Asker, seed: int) -> dict:
    rng = _rng(seed, "train", e.image_name)
    conv = []
    for i, task in enumerate(asker.pick_tasks(e, TRAIN_WEIGHTS, 3, rng)):
        q, a, _ = asker.ask(task, e, rng)
        conv += [{"role": "user", "content": ("<image>\n" if i == 0 else "") + q}, {"role": "assistant", "content": a}]
    return {"conversations": json.dumps(conv, ensure_ascii=False), "image_names": e.image_name}


def val_rows(e: Emoji, asker: Asker, seed: int, tasks: list[str] | None = None) -> list[dict]:
    """Three one-turn rows about a validation picture: the given `tasks` (the reference copy's) where they
    apply, the others drawn."""
    rng = _rng(seed, "val", e.image_name)
    usable = asker.tasks(e, VAL_WEIGHTS, drawn=False)
    tasks = [t for t in (tasks or []) if t in usable]
    if len(tasks) < 3:
        rest = asker.pick_tasks(e, {t: w for t, w in VAL_WEIGHTS.items() if t not in tasks}, 3 - len(tasks), rng)
        tasks += rest
    rows = []
    for task in tasks:
        q, a, short = asker.ask(task, e, rng)
        conv = [{"role": "user", "content": "<image>\n" + q}, {"role": "assistant", "content": a}]
        rows.append({"conversations": json.dumps(conv, ensure_ascii=False), "image_names": e.image_name,
                     "answer": short, "task": task})
    return rows


def picture_png(path: Path) -> bytes:
    """The picture made RGB on white (the guarded opener's `to_rgb`), as PNG bytes (optimize=True: the same
    bytes every time)."""
    from ..image import open_image_file
    rgb = open_image_file(path)
    buf = io.BytesIO()
    rgb.save(buf, format="PNG", optimize=True)
    return buf.getvalue()


def write_parquet(rows: list[dict], columns: list[str], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq
    types = {"image_bytes": pa.binary()}
    table = pa.table({c: pa.array([r[c] for r in rows], type=types.get(c, pa.string())) for c in columns})
    pq.write_table(table, path, row_group_size=ROW_GROUP_SIZE, compression="zstd", use_dictionary=True,
                   write_statistics=True, store_schema=True)


LICENSES = """# Emoji data: sources and licences

`emoji_train.parquet` and `emoji_val.parquet` were built by `minimind-v data emoji` from these npm packages
(pinned versions, integrity checked):

{packages}

* Noto Emoji images by Google, Apache License 2.0 (https://github.com/googlefonts/noto-emoji,
  https://www.apache.org/licenses/LICENSE-2.0), via emoji-datasource-google (MIT, Cal Henderson).
* Twemoji images, Copyright Twitter, Inc. and other contributors (jdecked/twemoji), CC BY 4.0
  (https://creativecommons.org/licenses/by/4.0/), via emoji-datasource-twitter (MIT, Cal Henderson).
* Emoji names, keywords, groups and subgroups: Unicode CLDR annotations, Unicode License v3
  (https://www.unicode.org/license.txt), via emojibase-data (MIT, Miles Johnson).

Changes: the images were recomposited onto a white background (RGB PNG); the questions and answers are
generated from the metadata by templates. The pictures keep their licences: share them with this notice.
"""


def licences_text() -> str:
    from .emoji_npm import PACKAGES
    return LICENSES.format(packages="\n".join(f"* {n}@{v} ({i})" for n, (v, i) in PACKAGES.items()))


def build(packages: dict[str, Path], out: Path, seed: int = 0, overwrite: bool = False,
          progress: bool = True, reference_selection: bool = True) -> dict:
    """Write DIR/emoji_train.parquet, DIR/emoji_val.parquet and DIR/LICENSES.md; returns counts. An existing
    non-empty DIR is refused unless `overwrite`; the files are written into a folder beside DIR that then
    takes its place (minimind_v/outputs.py), so an interrupted build leaves DIR as it was."""
    from tqdm import tqdm

    from ..outputs import check_output, staged_output
    inputs = list(packages.values())
    check_output(out, inputs, overwrite=overwrite, folder=True)
    emoji, unnamed = collect(packages, seed, reference_selection)
    if not emoji:
        raise ValueError("no emoji pictures found in the packages (img/<style>/64/*.png)")
    train, val = split(emoji, seed, reference_selection)
    asker = Asker(emoji)
    folders = {s: packages[f"emoji-datasource-{s}"] / "img" / s / "64" for s in STYLES}
    pngs = {e.image_name: picture_png(folders[e.style] / e.file)
            for e in tqdm(emoji, desc="pictures", unit="img", disable=not progress, mininterval=1.0)}
    rows_t = [train_row(e, asker, seed) for e in train]
    from .emoji_selection import VAL_ROWS
    pinned: dict[str, list[str]] = {}
    for name, task in (VAL_ROWS if reference_selection else []):
        pinned.setdefault(name, []).append(task)
    rows_v = [r for e in val for r in val_rows(e, asker, seed, pinned.get(e.image_name))]
    for rows, what in ((rows_t, "train"), (rows_v, "val")):
        _rng(seed, "order", what).shuffle(rows)
        for r in rows:
            r["image_bytes"] = pngs[r["image_names"]]
    # the reference copy's validation rows keep its order (a stable sort: any others follow, shuffled)
    position = {key: i for i, key in enumerate(VAL_ROWS)} if reference_selection else {}
    rows_v.sort(key=lambda r: position.get((r["image_names"], r["task"]), len(position)))
    with staged_output(out, inputs, overwrite=overwrite, folder=True) as stage:
        write_parquet(rows_t, ["conversations", "image_bytes", "image_names"], stage / "emoji_train.parquet")
        write_parquet(rows_v, ["conversations", "image_bytes", "image_names", "answer", "task"],
                      stage / "emoji_val.parquet")
        (stage / "LICENSES.md").write_text(licences_text(), encoding="utf-8")
    return {"pictures": len(emoji), "train_rows": len(rows_t), "val_rows": len(rows_v),
            "val_pictures": len(val), "unnamed_files": unnamed}


EXAMPLES = """examples:
  minimind-v data emoji --out data/emoji                          fetch the packages with npm, build the data
  minimind-v data emoji --out data/emoji --packages node_modules  use packages already unpacked there
  minimind-v emoji train --data data/emoji --out runs/emoji       then train on it (docs/emoji.md)"""

DESCRIPTION = """Build the emoji data set of docs/emoji.md:
  DIR/emoji_train.parquet  4,920 rows, a 3-turn conversation about each 64x64 Noto or Twemoji picture
  DIR/emoji_val.parquet    582 one-turn rows about 194 other pictures, with answer and task columns
  DIR/LICENSES.md          the sources and their licences (share it with the data)
from the npm packages emoji-datasource-google@16.0.0, emoji-datasource-twitter@16.0.0 and
emojibase-data@17.0.0, fetched with `npm pack` into --cache (integrity checked). The same packages
and seed give byte-identical files."""


def add_emoji_parser(sub) -> None:
    """Register `emoji` on the subparsers of the `minimind-v data` group."""
    import argparse
    p = sub.add_parser("emoji", help="build the emoji training and validation sets from the npm packages",
                       description=DESCRIPTION, epilog=EXAMPLES, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (must not exist or be empty)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace an existing DIR (the new one is written beside it, then swapped in)")
    p.add_argument("--cache", default=None, metavar="DIR",
                   help="where npm tarballs are kept and unpacked (default: ~/.cache/minimind-v/npm)")
    p.add_argument("--packages", default=None, metavar="DIR",
                   help="use the three packages already unpacked in DIR/<name>/ (a node_modules folder); "
                        "npm is not run")
    p.add_argument("--seed", type=int, default=0,
                   help="seed of the question draws (which questions, wordings, distractors, row order); "
                        "default 0")
    p.add_argument("--draw-selection", action="store_true",
                   help="draw the kept skin tones, the validation emoji (about 8%%) and their tasks from --seed "
                        "too, instead of the selection docs/emoji.md was measured on")
    p.add_argument("--no-progress", action="store_true", help="no progress lines or bars")
    p.set_defaults(func=run_emoji)


def run_emoji(args) -> int:
    import sys

    from .emoji_npm import DEFAULT_CACHE, check_packages, fetch_packages
    progress = not args.no_progress
    try:
        from ..outputs import check_output
        check_output(args.out, [p for p in (args.packages, args.cache) if p], overwrite=args.overwrite,
                     folder=True)
        packages = (check_packages(Path(args.packages)) if args.packages
                    else fetch_packages(Path(args.cache) if args.cache else DEFAULT_CACHE, progress=progress))
        counts = build(packages, Path(args.out), seed=args.seed, overwrite=args.overwrite, progress=progress,
                       reference_selection=not args.draw_selection)
    except (FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"wrote {args.out}: emoji_train.parquet ({counts['train_rows']} rows), emoji_val.parquet "
          f"({counts['val_rows']} rows, {counts['val_pictures']} pictures), LICENSES.md"
          + (f"; {counts['unnamed_files']} pictures without an emojibase name left out" if counts["unnamed_files"] else ""))
    return 0
