"""The emoji recipe: train a small VLM from nothing on real emoji artwork, then measure what it learned.

    python -m minimind_v.recipes.emoji --data DATA_DIR --out runs/emoji     (or recipes/emoji.sh DATA_DIR OUT)

Steps (CPU, nothing downloaded; the data is DATA_DIR/emoji_{train,val}.parquet, passed in by the caller):
  1. tokenizer: a byte-level BPE trained on the training conversations' text;
  2. captions: one short caption per training picture, mined from the training conversations
     themselves ("The image shows the beaver emoji. It is a mammal from the Animals & Nature
     category."); facts missing from a picture's own row are taken from the other art style's row of
     the same emoji (same code points) and, for kind and category, from its other skin tones; the
     validation file is never read for training;
  2b. encoder warm-up (the stand-in for SigLIP's own pretraining, which cannot be downloaded here): the
     tiny SigLIP2 encoder, from scratch, learns the category, the kind and which emoji a picture is
     (linear heads on its mean patch feature, pictures augmented; recipes/encoder_warmup.py). "Which
     emoji" is the same label for both art styles, so the features learn to agree across styles, which
     a validation picture (the other style of a training emoji) needs; the twin loss (`encoder_twins`)
     asks it directly: the Noto and the Twemoji drawing of one emoji (matched by code points) close
     together, other emoji apart. The encoder is then frozen;
  3. vlm-pretrain on the captions: projector and LLM; short rows, so every picture is seen with its
     name, kind and category several times cheaply; two questions per picture join them, in the data's
     own wording and answer form: a yes/no concept its kind answers ("Is this a flag?", `caption_concepts`)
     and its category ("Which category does this emoji belong to?", `caption_category`), so that both
     must come from the picture (in a caption the name comes first and gives the rest away);
     (`caption_verify` adds yes/no name questions instead, "Is this the otter emoji?": off, see below);
  4. vlm-sft on the full 3-turn training conversations (names, categories, yes/no, multiple choice,
     skin tones, flags, keywords), half of their questions asked in another wording (`paraphrase`,
     recipes/emoji_wording.py), so the model keys on what is asked rather than on two fixed strings,
     and half of those questions (in both VLM stages) with words dropped and words only the answers
     use slipped in (`question_noise`): ten wordings are still ten strings to a model trained from
     nothing, and in a wording it never saw it answered the category question in the wrong form;
  5. evaluation on emoji_val (rules in eval/score.py, with each task's other answers competing: rule 5),
     again with every picture blanked (the blind baseline), next to the majority-answer baseline per
     task, and again with the questions asked in wordings never trained on (`held_out_wording`);
     summary.json, predictions.jsonl, loss.png, examples. Every number is also given per art style
     of the validation pictures (`by_style`); `train_style` trains on one style only, so the other
     style's pictures show what the model makes of drawings it never saw (the cross-style split), and
     such a run also answers the category and kind of the other style's training pictures of the emoji
     families its twin loss did not pair (`other_style_rows`, half of them: ~850 category questions each
     way; emoji_val has too few to see a change of a few points).
     `emoji_probe.py` asks where what the model knows sits: in the frozen encoder or in the LLM.

Why these settings (docs/emoji.md has the measurements): a 64 px emoji cut into 8 px patches gives 64
patches, merged 4 by 4 into 16 visual tokens, which keeps a row short (16 + ~115 text tokens); the
warm-up raised category accuracy clearly (without it the encoder learns only through the LLM's loss, a
weak signal for a small encoder); a frozen encoder after it is as good as one trained on and cheaper (its
features come from the encoder cache); rows are packed (short rows of different lengths: packing with
attention per row on the CPU wastes no work on padding); the concept and category questions in step 3
took yes/no to 85.4-86.4% over three seeds (was 74.8-83.5%) and kept category at 69-72%, where the yes/no
name questions (`caption_verify`, the earlier default) helped yes/no on some seeds only and never taught
the model to tell emoji apart.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import random
import re
import time
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, replace
from pathlib import Path

from ..config import tiny_siglip
from .emoji_wording import held_out_rows, noise_rows, reword_rows, word_pool

TRAIN_FILE = "emoji_train.parquet"
VAL_FILE = "emoji_val.parquet"
CAPTION_PROMPT = "Describe this emoji."


@dataclass
class EmojiRecipe:
    vocab_size: int = 1024
    hidden: int = 128
    layers: int = 3
    heads: int = 4
    kv_heads: int = 2
    image_size: int = 64           # the pictures are 64 x 64
    patch_size: int = 8            # 8 x 8 = 64 patches -> 16 visual tokens after the 4-merge
    enc_hidden: int = 128
    enc_layers: int = 3
    enc_heads: int = 4
    encoder_epochs: float = 25.0   # encoder warm-up passes: category / kind / which-emoji heads (0: skip)
    encoder_lr: float = 2e-3
    encoder_augment: float = 1.0   # data/augment.py strength during the warm-up (0: off)
    encoder_restyle: float = 0.0   # share of warm-up pictures redrawn in another style (data/augment.restyle)
    encoder_concepts: bool = False  # also the yes/no concepts ("is a person"), by kind (concept_labels)
    encoder_twins: float = 1.0     # weight of the twin loss: one emoji's two drawings together (0: off)
    twin_share: float | None = None  # share of emoji families paired (paired_family; None: all, half with
                                   # train_style); with train_style, the other style's drawings of those
                                   # join the warm-up as twins only, and the cross-style test reads the rest
    encoder_from: str | None = None  # an earlier run's OUT/encoder (same data, seed, warm-up settings): no warm-up
    train_encoder: bool = False    # keep training the encoder in the VLM stages (False: frozen after warm-up)
    caption_epochs: float = 6.0    # vlm-pretrain passes over the mined captions (0: skip the stage)
    caption_verify: int = 0        # extra "Is this the X emoji?" rows per captioned picture in that stage
    verify_same_kind: float = 0.8  # share of their "no" questions naming an emoji of the same kind
    caption_concepts: int = 1      # extra "Is this a flag?" rows per picture whose kind answers it (concept_rows)
    caption_category: int = 1      # extra "Which category does this emoji belong to?" rows per picture (category_rows)
    sft_epochs: float = 7.0        # vlm-sft passes over the training conversations
    batch_size: int = 16           # rows per optimizer step
    max_length: int = 512          # longest row is ~200 tokens: nothing is cut
    padding: str = "pack"          # several rows per sequence, attention kept within each row
    lr: float = 2e-3
    sft_lr: float = 1.5e-3
    warmup_steps: int = 60
    augment: float = 0.0           # data/augment.py strength on every training picture (0: off)
    paraphrase: float = 0.5        # share of training questions asked in another wording (recipes/emoji_wording.py)
    paraphrase_kinds: str | None = None  # only these kinds of question, comma-separated ("category,kind"); None: all
    caption_paraphrase: float = 0.0  # the same for the caption stage's concept and category questions
    question_noise: float = 0.5    # share of those questions (both stages) with words dropped and inserted
                                   # (emoji_wording.noise_rows): what is asked, found in any wording
    train_rows: int | None = None  # use only the first N training rows (smoke runs)
    train_style: str | None = None  # train on one art style only ("google" or "twitter"): the cross-style split
    val_rows: int | None = None    # evaluate only N validation rows (smoke runs)
    max_new_tokens: int = 32

    def pair_share(self) -> float:
        """The share of emoji families the twin loss pairs (`twin_share`, resolved): all of them when both
        styles are trained on; half in a one-style run, whose cross-style test reads the other half (the
        same half with the twin loss off, so runs with and without it are scored on the same pictures)."""
        if self.twin_share is not None:
            return self.twin_share
        return 0.5 if self.train_style is not None else 1.0

    def check(self) -> None:
        """Refuse settings that cannot run or would measure the wrong thing, in one line (ValueError)."""
        if self.encoder_twins < 0 or not 0 < self.pair_share() <= 1:
            raise ValueError(f"encoder_twins must be >= 0 and twin_share in (0, 1], got {self.encoder_twins:g} "
                             f"and {self.pair_share():g}")
        if self.train_style is not None and self.encoder_twins > 0 and self.pair_share() >= 1:
            raise ValueError("a one-style run with encoder_twins needs twin_share < 1: its cross-style test "
                             "reads the other style's drawings that the twin loss did not pair")

    def model_overrides(self) -> dict:
        vision = tiny_siglip(self.enc_hidden, self.enc_layers, self.enc_heads, self.image_size, self.patch_size)
        return dict(hidden_size=self.hidden, num_hidden_layers=self.layers, num_attention_heads=self.heads,
                    num_key_value_heads=self.kv_heads, vision=vision, max_position_embeddings=1024)


# A one-minute smoke version: same pipeline, a small model, 400 training rows, 60 validation rows.
QUICK = EmojiRecipe(vocab_size=512, hidden=64, layers=2, heads=2, kv_heads=1, enc_hidden=64, enc_layers=1,
                    enc_heads=2, encoder_epochs=2.0, caption_epochs=1.0, sft_epochs=5.0, batch_size=16,
                    warmup_steps=5, train_rows=400, val_rows=60, max_new_tokens=24)


# ---------------------------------------------------------------------------------------------------
# Captions mined from the training conversations
# ---------------------------------------------------------------------------------------------------

_DESCRIBE = re.compile(r"^The image shows the (.+?)\. It is (an? .+?) from the (.+?) category\.")
_BELONGS = re.compile(r"^It belongs to the (.+?) category\.$")
_KIND = re.compile(r"^It is (an? .+?): the (.+)\.$")
_THIS_IS = re.compile(r"^(?:Yes, |No, )?this is the (.+?)(?:, not the .+)?\.$", re.IGNORECASE)
_CATEGORY_LIST = "Which of these categories"


def emoji_key(image_name: str) -> str:
    """'google/1f44b-1f3fd.png' -> '1f44b-1f3fd': the same emoji in every art style."""
    return image_name.rsplit("/", 1)[-1].rsplit(".", 1)[0]


_SKIN_TONES = {"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"}


def family_key(image_name: str) -> str:
    """The emoji without skin-tone modifiers: '1f44b-1f3fd' -> '1f44b' (all tones share kind and category)."""
    return "-".join(c for c in emoji_key(image_name).split("-") if c not in _SKIN_TONES)


def row_facts(conversation: list[dict]) -> dict:
    """The subject ('beaver emoji', 'flag of Zambia'), kind ('an animal') and category a row states."""
    facts: dict = {}
    for q, a in zip(conversation[::2], conversation[1::2]):
        text = a["content"].strip()
        if m := _DESCRIBE.match(text):
            facts.update(subject=m[1], kind=m[2], category=m[3])
        elif m := _BELONGS.match(text):
            facts["category"] = m[1]
        elif m := _KIND.match(text):
            facts.setdefault("kind", m[1])
            facts.setdefault("subject", m[2])
        elif q["content"].replace("<image>", "").strip().startswith(_CATEGORY_LIST):
            facts["category"] = text
        elif m := _THIS_IS.match(text):
            facts.setdefault("subject", m[1])
    return facts


def caption(facts: dict) -> str | None:
    """One caption in the data's own wording (its 'Describe' answer), or None when the subject is unknown:
    "The image shows the beaver emoji. It is a mammal from the Animals & Nature category." Putting the
    category and kind before the name did no better (docs/LOG.md, 2026-11-28)."""
    if "subject" not in facts:
        return None
    text = f"The image shows the {facts['subject']}."
    if "kind" in facts and "category" in facts:
        text += f" It is {facts['kind']} from the {facts['category']} category."
    elif "category" in facts:
        text += f" It belongs to the {facts['category']} category."
    elif "kind" in facts:
        text += f" It is {facts['kind']}."
    return text


def picture_facts(rows: list[dict]) -> list[dict]:
    """What is known of each training picture: its row's own facts, then those of the same emoji's rows in
    another style, then (kind and category only) those of its other skin tones."""
    per_row = [row_facts(json.loads(r["conversations"])) for r in rows]
    by_emoji: dict[str, dict] = defaultdict(dict)
    by_family: dict[str, dict] = defaultdict(dict)
    for r, f in zip(rows, per_row):
        for k, v in f.items():
            by_emoji[emoji_key(r["image_names"])].setdefault(k, v)
            if k != "subject":
                by_family[family_key(r["image_names"])].setdefault(k, v)
    return [{**by_family[family_key(r["image_names"])], **by_emoji[emoji_key(r["image_names"])], **f}
            for r, f in zip(rows, per_row)]


_YES_NO = re.compile(r"^(?:Is this|Does this image show) (an? .+|food or a drink|sky or weather|sports equipment)\?$")


def concept_labels(rows: list[dict], facts: list[dict]) -> dict[str, list]:
    """Yes/no concepts ("a person", "an animal", "a flag", ...) for every picture whose kind is known.

    The training rows ask such questions about some pictures only; the answer depends on the emoji's kind
    (every "a mammal" is "an animal"), so each (kind, concept) answered the same way every time it was
    asked is given to every picture of that kind. Returns {concept: ["yes" | "no" | None per picture]}."""
    seen: dict[tuple[str, str], set] = defaultdict(set)
    for r, f in zip(rows, facts):
        if "kind" not in f:
            continue
        conv = json.loads(r["conversations"])
        for q, a in zip(conv[::2], conv[1::2]):
            if m := _YES_NO.match(q["content"].replace("<image>", "").strip()):
                seen[(f["kind"], m[1])].add(a["content"].split(",")[0].strip().lower())
    concepts = sorted({c for _, c in seen})
    answer = {key: next(iter(v)) for key, v in seen.items() if len(v) == 1 and next(iter(v)) in ("yes", "no")}
    return {c: [answer.get((f.get("kind"), c)) for f in facts] for c in concepts}


def qa_row(picture: dict, question: str, answer: str) -> dict:
    """A one-turn training row about `picture` (a training row: its image bytes and name are kept)."""
    conv = [{"role": "user", "content": "<image>\n" + question}, {"role": "assistant", "content": answer}]
    return {"conversations": json.dumps(conv, ensure_ascii=False), "image_bytes": picture["image_bytes"],
            "image_names": picture["image_names"]}


def mine_captions(rows: list[dict], facts: list[dict] | None = None) -> tuple[list[dict], dict]:
    """Caption rows for every training picture whose subject is known (`facts`: `picture_facts(rows)`,
    computed here when not given). Returns (rows, counts)."""
    out, counts = [], {"pictures": len(rows), "captioned": 0, "with_category": 0, "with_kind": 0}
    for r, full in zip(rows, facts if facts is not None else picture_facts(rows)):
        text = caption(full)
        if text is None:
            continue
        counts["captioned"] += 1
        counts["with_category"] += "category" in full
        counts["with_kind"] += "kind" in full
        out.append(qa_row(r, CAPTION_PROMPT, text))
    return out, counts


_VERIFY_QUESTIONS = ("Is this the {}?", "Does this image show the {}?")   # the training file's two wordings


def verification_rows(rows: list[dict], facts: list[dict], per_picture: int = 1, same_kind: float = 0.8,
                      seed: int = 0) -> list[dict]:
    """Yes/no name questions made from the mined facts, `per_picture` for every picture whose subject is
    known, in the training file's own wording: half "Is this the beaver emoji?" -> "Yes, this is the beaver
    emoji.", half a question naming another training emoji -> "No, this is the beaver emoji, not the otter
    emoji." A `same_kind` share of the other names is of the same kind (a mammal for a mammal), as 81% of
    the training file's own "no" questions are; those are the ones a kind or category cannot answer.

    Why: the file asks this about 1,333 pictures only; these rows give every picture a name to accept and
    names to refuse. Measured (docs/emoji.md, 2026-12-03): yes/no and name_yesno rose on seed 0, but the
    model still cannot tell one emoji from another of its kind, so name_yesno stays below its majority."""
    rng = random.Random(seed)
    known = [(r, f) for r, f in zip(rows, facts) if "subject" in f]
    subjects = sorted({f["subject"] for _, f in known})
    by_kind: dict[str, list[str]] = defaultdict(list)
    for s, kind in sorted({(f["subject"], f.get("kind")) for _, f in known if "kind" in f}):
        by_kind[kind].append(s)
    out = []
    for r, f in known:
        for _ in range(per_picture):
            asked = f["subject"]
            if rng.random() >= 0.5:
                pool = by_kind.get(f.get("kind"), []) if rng.random() < same_kind else subjects
                others = [s for s in pool if s != f["subject"]] or [s for s in subjects if s != f["subject"]]
                if not others:
                    continue
                asked = rng.choice(others)
            q = rng.choice(_VERIFY_QUESTIONS).format(asked)
            a = (f"Yes, this is the {asked}." if asked == f["subject"]
                 else f"No, this is the {f['subject']}, not the {asked}.")
            out.append(qa_row(r, q, a))
    return out


_CONCEPT_QUESTIONS = ("Is this {}?", "Does this image show {}?")       # the training file's two wordings


def concept_rows(rows: list[dict], facts: list[dict], per_picture: int = 1, seed: int = 0) -> list[dict]:
    """Yes/no concept questions ("Is this a flag?") for every picture whose subject is known and whose kind
    answers some concept (`concept_labels`: the training rows' own answers, spread over each kind), in the
    training file's wording and answer form ("No, this is the beaver emoji."); half ask a concept the
    picture has, half one it has not, where it has both.

    Why: the file asks 2,299 such questions, and a model trained on them answers "No, this is the flag of
    Slovenia." to "Is this a flag?": it sees the flag (it names one) but its first word, the only one
    scored, does not follow from it. These rows put every captioned picture through that decision."""
    rng = random.Random(seed + 1)
    labels = concept_labels(rows, facts)
    out = []
    for i, (r, f) in enumerate(zip(rows, facts)):
        if "subject" not in f:
            continue
        by_answer = {"yes": [], "no": []}
        for concept, answers in sorted(labels.items()):
            if answers[i] in by_answer:
                by_answer[answers[i]].append(concept)
        for _ in range(per_picture):
            pick = "yes" if rng.random() < 0.5 else "no"
            if not by_answer[pick]:
                pick = "no" if pick == "yes" else "yes"
            if not by_answer[pick]:
                break
            concept = rng.choice(by_answer[pick])
            q = rng.choice(_CONCEPT_QUESTIONS).format(concept)
            out.append(qa_row(r, q, f"{pick.capitalize()}, this is the {f['subject']}."))
    return out


_CATEGORY_QUESTIONS = ("Which category does this emoji belong to?", "What emoji category is this in?")


def category_rows(rows: list[dict], facts: list[dict], per_picture: int = 1, seed: int = 0) -> list[dict]:
    """A category question for every picture whose category is known, in the training file's two wordings
    and its answer form ("It belongs to the Animals & Nature category.").

    Why: in a caption the category comes after the name, so the text already gives it away and the
    picture need not; the file asks the question itself about 1,148 pictures. Here the category must
    come from the picture alone, for every picture."""
    rng = random.Random(seed + 2)
    out = []
    for r, f in zip(rows, facts):
        if "category" not in f:
            continue
        for _ in range(per_picture):
            out.append(qa_row(r, rng.choice(_CATEGORY_QUESTIONS), f"It belongs to the {f['category']} category."))
    return out


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------

_KIND_QUESTIONS = ("What type of emoji is this?", "What kind of thing is this?")   # the training file's two


def paired_family(image_name: str, share: float) -> bool:
    """Whether the picture's emoji family is among the `share` of families whose two drawings the warm-up
    may pair (`encoder_twins`). Decided by a hash of the family's code points, not by the seed, so every
    seed and both styles split the same way."""
    if share >= 1:
        return True
    digest = hashlib.sha256(family_key(image_name).encode()).digest()
    return int.from_bytes(digest[:4], "big") / 2 ** 32 < share


def twin_index(rows: list[dict]) -> list[int]:
    """For each row, the index of the row with the same emoji (code points) in another art style, or -1."""
    by_key: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        by_key[emoji_key(r["image_names"])].append(i)
    out = []
    for r in rows:
        style = style_of(r["image_names"])
        other = [j for j in by_key[emoji_key(r["image_names"])] if style_of(rows[j]["image_names"]) != style]
        out.append(other[0] if other else -1)
    return out


def other_style_pictures(rows: list[dict], train_style: str, twin_share: float = 1.0) -> list[int]:
    """Indices of the pictures not in `train_style`, one per emoji family (the first of its skin tones);
    with `twin_share` < 1 only the families not paired (`paired_family`), whose other drawing no part of
    the run has seen."""
    families, out = set(), []
    for i, r in enumerate(rows):
        if twin_share < 1 and paired_family(r["image_names"], twin_share):
            continue
        if style_of(r["image_names"]) != train_style and family_key(r["image_names"]) not in families:
            families.add(family_key(r["image_names"]))
            out.append(i)
    return out


def other_style_rows(data_dir: str | Path, train_style: str, limit: int | None = None,
                     twin_share: float = 1.0) -> list[dict]:
    """Eval rows on every picture of the training file NOT in `train_style`: its category and its kind,
    asked in the training file's wordings (alternating), the answers mined as for the captions; one
    picture per emoji family (its skin tones share category and kind and would count five times).

    Why: emoji_val has 33-39 category questions per style, so one answer moves the cross-style score by
    2.6-3.0 points, more than any change measured; the other style's training pictures (the same emoji,
    another artist, none of them seen when training on one style: ~1,700 families, ~850 with
    `twin_share=0.5`) measure it to one or two points."""
    rows = _read_rows(Path(data_dir) / TRAIN_FILE)
    facts, out = picture_facts(rows), []
    for i in other_style_pictures(rows, train_style, twin_share):
        r, f = rows[i], facts[i]
        for task, answer, questions in (("category", f.get("category"), _CATEGORY_QUESTIONS),
                                        ("kind", f.get("kind"), _KIND_QUESTIONS)):
            if answer is None:
                continue
            answer = re.sub(r"^an? ", "", answer)
            conv = [{"role": "user", "content": "<image>\n" + questions[i % 2]}]
            out.append({"conversations": json.dumps(conv), "image_bytes": r["image_bytes"],
                        "image_names": r["image_names"], "answer": answer, "task": task})
    return out[:limit]


def style_of(image_name: str) -> str:
    """'google/1f44b.png' -> 'google': the art style is the picture's folder."""
    return image_name.split("/", 1)[0] if "/" in image_name else "?"


def _read_rows(path: Path, limit: int | None = None, style: str | None = None,
               columns=("conversations", "image_bytes", "image_names")) -> list[dict]:
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    t = pq.read_table(path, columns=list(columns))
    if style is not None:                  # filtered and cut in Arrow: only the rows used become Python
        t = t.filter(pc.starts_with(t["image_names"], style + "/"))
        if t.num_rows == 0:
            raise ValueError(f"no training picture of art style {style!r} in {path}")
    return (t if limit is None else t.slice(0, limit)).to_pylist()


def by_style(val: list[dict], res: dict, blind: dict) -> dict:
    """The evaluation split by the validation pictures' art style: {style: {"n", "overall", "per_type",
    "blind", "majority", "majority_per_type"}}. Scored once on the whole set (the answers that compete
    under rule 5 are the whole task's), then grouped; each style's majority is its own."""
    from ..eval.evaluate import majority_baseline

    out = {}
    for style in sorted({style_of(r["image_names"]) for r in val}):
        rows = {i for i, r in enumerate(val) if style_of(r["image_names"]) == style}
        n = sum(p["row"] in rows for p in res["predictions"])            # bad rows are skipped, not scored
        blind_right = [p["correct"] for p in blind["predictions"] if p["row"] in rows]
        maj = majority_baseline([val[i] for i in sorted(rows)])
        out[style] = {"n": n, **_subset_score(res, rows),
                      "blind": sum(blind_right) / max(1, len(blind_right)),
                      "majority": maj["overall"], "majority_per_type": maj["per_type"]}
    return out


def _subset_score(res: dict, rows: set[int]) -> dict:
    """`res` (an `evaluate` result) scored on the given evaluation rows only: overall and per type."""
    per: dict[str, list] = defaultdict(list)
    for p in res["predictions"]:
        if p["row"] in rows:
            per[p["type"]].append(p["correct"])
    right = [c for v in per.values() for c in v]
    return {"overall": sum(right) / max(1, len(right)), "per_type": {t: sum(v) / len(v) for t, v in sorted(per.items())}}


def _write_rows(rows: list[dict], path: Path) -> Path:
    import pyarrow as pa
    import pyarrow.parquet as pq
    path.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def training_texts(rows: list[dict]):
    """Every turn's text (the <image> marker removed): the tokenizer's training corpus."""
    for r in rows:
        for m in json.loads(r["conversations"]):
            yield m["content"].replace("<image>", "").strip()


def _steps(n_rows: int, epochs: float, batch_size: int) -> int:
    return max(1, round(n_rows * epochs / batch_size))


def run_emoji(data_dir: str | Path, out: str | Path = "runs/emoji", quick: bool = False, seed: int = 0,
              recipe: EmojiRecipe | None = None, threads: int | None = None, examples: int = 6) -> dict:
    """Train from nothing on DATA_DIR/emoji_train.parquet, evaluate on emoji_val.parquet; the final model
    folder is OUT/model. Returns the summary (also written to OUT/summary.json)."""
    import torch

    from ..pipeline import VLM
    from ..tokenizer import train_tokenizer
    from ..train.loop import TrainConfig, train
    from ..train.metrics import plot_stages
    from .demo import library_versions

    r = recipe or (QUICK if quick else EmojiRecipe())
    r.check()
    data_dir, out = Path(data_dir), Path(out)
    for name in (TRAIN_FILE, VAL_FILE):
        if not (data_dir / name).exists():
            raise FileNotFoundError(f"{data_dir / name} not found: DATA_DIR must hold {TRAIN_FILE} and {VAL_FILE}")
    out.mkdir(parents=True, exist_ok=True)
    if threads:
        torch.set_num_threads(threads)
    torch.manual_seed(seed)
    t0, cpu0 = time.time(), time.process_time()
    say = lambda msg: print(f"[emoji {time.time() - t0:6.0f}s] {msg}", flush=True)  # noqa: E731
    timings = {}

    rows = _read_rows(data_dir / TRAIN_FILE, r.train_rows, r.train_style)
    train_file, sft_rows = data_dir / TRAIN_FILE, rows
    if r.paraphrase > 0:                   # facts and labels are still mined from the rows as written
        kinds = None if r.paraphrase_kinds is None else r.paraphrase_kinds.split(",")
        sft_rows, n_reworded = reword_rows(rows, r.paraphrase, seed, kinds)
        say(f"{n_reworded} training questions asked in another wording (paraphrase={r.paraphrase:g})")
    pool = word_pool(rows) if r.question_noise > 0 else None   # the words noise_rows slips in, both stages
    if r.question_noise > 0:
        sft_rows, n_noisy = noise_rows(sft_rows, r.question_noise, seed + 5, pool)
        say(f"{n_noisy} training questions with words dropped and inserted (question_noise={r.question_noise:g})")
    if r.train_rows is not None or r.train_style is not None or r.paraphrase > 0 or r.question_noise > 0:
        train_file = _write_rows(sft_rows, out / "data" / "train_subset.parquet")
    if r.train_style is not None:
        say(f"training on the {r.train_style} art style only ({len(rows)} pictures): the cross-style split")
    say(f"1/5 tokenizer: byte-level BPE, vocab {r.vocab_size}, on {len(rows)} training conversations")
    tok_dir = out / "tokenizer"
    train_tokenizer(training_texts(sft_rows), r.vocab_size, tok_dir, show_progress=False)

    facts = picture_facts(rows)
    caps, cap_counts, cap_file = _caption_stage_rows(rows, facts, r, seed, out, say, pool)

    vision, warm = _encoder(r, rows, facts, seed, out, say, timings, data_dir)
    common = dict(batch_size=r.batch_size, unfreeze_vision=r.train_encoder,
                  trainable="all" if r.train_encoder else "projector+llm", seed=seed, log_every=20,
                  num_workers=0, padding=r.padding, max_length=r.max_length, augment=r.augment)
    if not r.train_encoder and not r.augment:      # a frozen encoder sees each picture once, for both stages
        common["encoder_cache"] = str(out / "encoder_cache")
    stages = []
    init = None
    if r.caption_epochs > 0:
        steps = _steps(len(caps), r.caption_epochs, r.batch_size)
        say(f"3/5 vlm-pretrain on captions: {steps} steps ({r.caption_epochs:g} epochs)")
        t = time.time()
        train(TrainConfig(stage="vlm-pretrain", data=[str(cap_file)], out=str(out / "pretrain"),
                          tokenizer=str(tok_dir), preset="tiny", model_overrides=r.model_overrides(),
                          max_steps=steps, lr=r.lr, warmup_steps=r.warmup_steps, **vision, **common))
        timings["vlm_pretrain_s"] = round(time.time() - t, 1)
        stages.append(("pretrain", steps))
        init = str(out / "pretrain" / "model")
    steps = _steps(len(rows), r.sft_epochs, r.batch_size)
    say(f"4/5 vlm-sft on the conversations: {steps} steps ({r.sft_epochs:g} epochs)")
    t = time.time()
    sft_model = dict(init_from=init) if init else dict(tokenizer=str(tok_dir), preset="tiny",
                                                        model_overrides=r.model_overrides(), **vision)
    train(TrainConfig(stage="vlm-sft", data=[str(train_file)], out=str(out / "sft"), max_steps=steps,
                      lr=r.sft_lr, warmup_steps=0 if init else r.warmup_steps, **sft_model, **common))
    timings["vlm_sft_s"] = round(time.time() - t, 1)
    stages.append(("sft", steps))
    train_wall, train_cpu = time.time() - t0, time.process_time() - cpu0
    final = _publish(out / "sft" / "model", out / "model")

    say("5/5 evaluating on emoji_val (and blind)")
    t = time.time()
    vlm = VLM.load(final)
    val, res, blind, wording, maj, styles, other = _evaluate(vlm, data_dir, r)
    timings["eval_s"] = round(time.time() - t, 1)

    plot_stages(out, stages, title="emoji training loss (vlm-pretrain on captions, then vlm-sft)")
    summary = {"overall": res["overall"], "per_type": res["per_type"], "blind": blind["overall"],
               "blind_per_type": blind["per_type"], "majority_baseline": maj["overall"],
               "majority_per_type": maj["per_type"], "by_style": styles, "other_style_train": other, "held_out_wording": wording, "n_eval": res["n"],
               "n_per_type": dict(sorted(Counter(p["type"] for p in res["predictions"]).items())), "train_wall_clock_s": round(train_wall, 1),
               "train_cpu_s": round(train_cpu, 1),
               "wall_clock_s": round(time.time() - t0, 1), "timings": timings, "threads": torch.get_num_threads(),
               "captions": cap_counts, "encoder_warmup": warm, "parameters": vlm.model.num_parameters(include_vision=True),
               "model": str(final.resolve()), "recipe": asdict(r), "quick": quick, "seed": seed,
               "versions": library_versions()}
    (out / "summary.json").write_text(json.dumps(summary, indent=2))
    (out / "predictions.jsonl").write_text("".join(json.dumps(p, ensure_ascii=False) + "\n"
                                                   for p in res["predictions"]))
    _report(summary, res, blind, maj, styles, other, wording, val, r, final, out, examples)
    return summary


def stratified(rows: list[dict], n: int) -> list[dict]:
    """The first n rows taken task by task in turn, so that a small subset still holds every task."""
    from ..eval.evaluate import row_type
    by: dict[str, list] = defaultdict(list)
    for row in rows:
        by[row_type(row)].append(row)
    queues = [iter(v) for v in by.values()]
    out: list[dict] = []
    while len(out) < min(n, len(rows)):
        for q in queues:
            row = next(q, None)
            if row is not None and len(out) < n:
                out.append(row)
    return out


def _publish(src: Path, dst: Path) -> Path:
    """Write the last stage's model to OUT/model (the folder the recipe promises), its frozen encoder
    bundled in as OUT/model/vision_encoder (`save_model`'s bundle_encoder) rather than pointed at, so the
    folder stands alone and can be moved."""
    import shutil

    from ..formats.folder import save_model
    from ..pipeline import VLM
    if dst.exists():
        shutil.rmtree(dst)
    vlm = VLM.load(src)
    return save_model(vlm.model, dst, vlm.tok, bundle_encoder=True)


def add_arguments(ap: argparse.ArgumentParser) -> None:
    """The flags of `minimind-v emoji train`."""
    ap.description = __doc__.split("\n")[0]
    ap.add_argument("--data", required=True, help=f"folder holding {TRAIN_FILE} and {VAL_FILE}")
    ap.add_argument("--out", default="runs/emoji", help="run folder; the final model folder is OUT/model")
    ap.add_argument("--quick", action="store_true", help="a one-minute smoke run (small model, 300 rows)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    ap.add_argument("--set", nargs="*", action="extend", default=[], metavar="FIELD=VALUE",
                    help="override recipe fields, e.g. --set sft_epochs=2 hidden=128 (may be repeated)")
    ap.set_defaults(func=run_args)


def recipe_of(a: argparse.Namespace) -> EmojiRecipe:
    """The recipe the parsed flags describe: every `--set` applied, repeated `--set`s too."""
    r = QUICK if a.quick else EmojiRecipe()
    if a.set:
        r = replace(r, **_parse_overrides(r, a.set))
    return r


def parse_args(argv: list[str] | None = None) -> tuple[argparse.Namespace, EmojiRecipe]:
    """The command line -> (arguments, recipe)."""
    ap = argparse.ArgumentParser(prog="minimind-v emoji train")
    add_arguments(ap)
    a = ap.parse_args(argv)
    return a, recipe_of(a)


def main(argv: list[str] | None = None) -> int:
    return run_args(parse_args(argv)[0])


def run_args(a: argparse.Namespace) -> int:
    """`minimind-v emoji train`: run the recipe the flags describe."""
    r = recipe_of(a)
    try:
        r.check()
    except ValueError as e:
        raise SystemExit(f"error: {e}") from None
    try:
        run_emoji(a.data, a.out, quick=a.quick, seed=a.seed, recipe=r, threads=a.threads)
    except FileNotFoundError as e:                 # a wrong DATA_DIR: one line, not a traceback
        raise SystemExit(f"error: {e}") from None
    except ValueError as e:
        if "art style" not in str(e):
            raise
        raise SystemExit(f"error: {e} (the styles are the pictures' folders: google, twitter)") from None
    return 0


def _parse_overrides(r: EmojiRecipe, items: list[str]) -> dict:
    fields = asdict(r)
    out = {}
    for item in items:
        key, _, value = item.partition("=")
        if key not in fields:
            raise SystemExit(f"unknown recipe field {key!r}; fields: {', '.join(fields)}")
        cur = fields[key]
        if value.lower() == "none":
            out[key] = None
        elif isinstance(cur, bool):
            out[key] = value.lower() in ("1", "true", "yes")
        elif isinstance(cur, int) or (cur is None and value.isdigit()):
            out[key] = int(value)
        elif isinstance(cur, float):
            out[key] = float(value)
        else:
            out[key] = value
    return out



def _caption_stage_rows(rows, facts, r: EmojiRecipe, seed: int, out: Path, say, pool: list[str] | None = None):
    """The caption stage's rows: mined captions plus the extra question rows the recipe asks for, written to
    OUT/data/captions.parquet; `pool`: the words `question_noise` slips in (None: `word_pool(rows)`).
    Returns (rows, counts, file)."""
    caps, cap_counts = mine_captions(rows, facts)
    extra = {}                             # more caption-stage rows, appended (the loop shuffles)
    if r.caption_verify > 0:
        extra["yes/no name"] = verification_rows(rows, facts, r.caption_verify, r.verify_same_kind, seed)
    if r.caption_concepts > 0:
        extra["yes/no concept"] = concept_rows(rows, facts, r.caption_concepts, seed)
    if r.caption_category > 0:
        extra["category"] = category_rows(rows, facts, r.caption_category, seed)
    questions = [row for more in extra.values() for row in more]
    if r.caption_paraphrase > 0:           # the stage's questions in other wordings too, not only the data's two
        questions, n = reword_rows(questions, r.caption_paraphrase, seed + 3)
        say(f"{n} caption-stage questions asked in another wording (caption_paraphrase={r.caption_paraphrase:g})")
    if r.question_noise > 0:
        questions, n = noise_rows(questions, r.question_noise, seed + 6, pool or word_pool(rows))
        say(f"{n} caption-stage questions with words dropped and inserted (question_noise={r.question_noise:g})")
    caps = caps + questions
    cap_file = _write_rows(caps, out / "data" / "captions.parquet")
    say(f"2/5 captions mined for {cap_counts['captioned']} of {cap_counts['pictures']} pictures "
        f"({cap_counts['with_category']} with a category, {cap_counts['with_kind']} with a kind)"
        + "".join(f", plus {len(more)} {what} questions" for what, more in extra.items()))

    return caps, cap_counts, cap_file


def _encoder(r: EmojiRecipe, rows, facts, seed: int, out: Path, say, timings: dict, data_dir: Path):
    """The encoder the VLM stages start from: an earlier run's (encoder_from), one warmed up here on the
    category / kind / which-emoji heads (saved to OUT/encoder), or none (the preset's random one).
    Returns (TrainConfig vision settings, the warm-up's summary or None)."""
    vision, warm = {}, None
    if r.encoder_from is not None:         # the warm-up is seeded: an earlier run's encoder is the same one
        if not (Path(r.encoder_from) / "config.json").exists():
            raise FileNotFoundError(f"encoder_from={r.encoder_from}: no encoder folder there (want OUT/encoder "
                                    "of an earlier run)")
        say(f"2b/5 encoder warm-up skipped: the encoder of {r.encoder_from} is used")
        vision = dict(vision_encoder=str(Path(r.encoder_from).resolve()))
    elif r.encoder_epochs > 0:
        from ..data.augment import augment_image, restyle
        from ..image import open_image
        from ..model.vision import VisionEncoder
        from .encoder_warmup import warm_up_encoder_tasks
        say(f"2b/5 encoder warm-up: category, kind and which emoji, {r.encoder_epochs:g} epochs"
            + (f", twins (weight {r.encoder_twins:g})" if r.encoder_twins > 0 else ""))
        t = time.time()
        encoder = VisionEncoder(r.model_overrides()["vision"])
        tasks = {"category": [f.get("category") for f in facts], "kind": [f.get("kind") for f in facts],
                 "emoji": [emoji_key(row["image_names"]) for row in rows]}
        if r.encoder_concepts:
            tasks.update({f"is {c}": v for c, v in concept_labels(rows, facts).items()})
        pictures, twins = _warmup_pictures(r, rows, tasks, data_dir)
        pics = [open_image(row["image_bytes"]) for row in pictures]
        aug = None
        if r.encoder_augment > 0 or r.encoder_restyle > 0:
            aug = lambda im: augment_image(restyle(im, r.encoder_restyle), r.encoder_augment)  # noqa: E731
        warm = warm_up_encoder_tasks(encoder, pics, tasks, epochs=r.encoder_epochs, batch_size=64,
                                     lr=r.encoder_lr, augment=aug, seed=seed, progress=True, twins=twins,
                                     twin_weight=r.encoder_twins)
        encoder.encoder.save_pretrained(str(out / "encoder"))
        vision = dict(vision_encoder=str(out / "encoder"))
        timings["encoder_warmup_s"] = round(time.time() - t, 1)
        say(f"    {warm['steps']} steps, final loss {warm['loss']:.3f} ({warm['classes']})")
    return vision, warm


def _warmup_pictures(r: EmojiRecipe, rows: list[dict], tasks: dict[str, list],
                     data_dir: Path) -> tuple[list[dict], list[int] | None]:
    """The warm-up's pictures and their twins (None: no twin loss). Both styles: the training rows, each
    paired with its other drawing where its family is paired. One style (`train_style`): the other
    style's drawings of the paired families join as twins only, unlabelled (None in every task, which
    is extended in place), so what is labelled stays one style."""
    if r.encoder_twins <= 0:
        return rows, None
    share = r.pair_share()
    pictures = list(rows)
    if r.train_style is not None:
        seen = {emoji_key(row["image_names"]) for row in rows}
        everything = _read_rows(data_dir / TRAIN_FILE, columns=("image_bytes", "image_names"))
        extra = [row for row in everything if style_of(row["image_names"]) != r.train_style
                 and emoji_key(row["image_names"]) in seen and paired_family(row["image_names"], share)]
        pictures += extra
        for labels in tasks.values():
            labels.extend([None] * len(extra))
    twins = twin_index(pictures)
    twins = [t if t >= 0 and paired_family(p["image_names"], share) else -1
             for p, t in zip(pictures, twins)]
    return pictures, twins


def _report(summary, res, blind, maj, styles, other, wording, val, r: EmojiRecipe, final, out: Path,
            examples: int) -> None:
    """The run's result on the terminal: the score table, the per-style and cross-style lines, examples."""
    from ..eval.evaluate import format_table, show_examples
    train_wall, train_cpu = summary["train_wall_clock_s"], summary["train_cpu_s"]
    print()
    print(format_table(res, blind, maj))
    print(f"\nvalidation questions: {res['n']}   training: {train_wall:.0f} s wall clock, {train_cpu:.0f} s CPU   "
          f"total: {summary['wall_clock_s']:.0f} s   threads: {summary['threads']}   "
          f"parameters: {summary['parameters']:,}")
    print("blind = every picture replaced by a blank one; majority = always the most frequent answer per task")
    for style, st in styles.items():
        seen = "" if r.train_style is None else (" (the trained style)" if style == r.train_style
                                                  else " (a style it never saw)")
        print(f"  {style} pictures{seen}: {st['overall']:.1%} of {st['n']}, category "
              f"{st['per_type'].get('category', float('nan')):.1%} (majority "
              f"{st['majority_per_type'].get('category', float('nan')):.1%}), blind {st['blind']:.1%}")
    if other is not None:
        print(f"  the other style's {other['n']} training-file questions (pictures never trained on): " + ", ".join(
            f"{t} {a:.1%} (majority {other['majority_per_type'][t]:.1%})" for t, a in sorted(other["per_type"].items())))
    print(f"  asked in wordings never trained on ({wording['n']} of the questions): {wording['overall']:.1%}, "
          f"the same questions as written: {wording['as_written']['overall']:.1%}")
    print()
    show_examples(val, res["predictions"], examples, tagged=True)
    print(f"\nmodel folder: {final}\nloss curve:   {out / 'loss.png'}\nsummary:      {out / 'summary.json'}")


def _evaluate(vlm, data_dir: Path, r: EmojiRecipe):
    """emoji_val with and without pictures, in held-out wordings, per style, and (one-style runs) the other
    style's training pictures. Returns (val rows, results, blind results, wording, majority, styles, other)."""
    from ..eval.evaluate import evaluate, load_eval_rows, majority_baseline
    val = load_eval_rows([data_dir / VAL_FILE])
    if r.val_rows is not None:
        val = stratified(val, r.val_rows)
    res = evaluate(vlm, val, max_new_tokens=r.max_new_tokens, progress=False)
    blind = evaluate(vlm, val, blind=True, max_new_tokens=r.max_new_tokens, progress=False)
    reworded_val, index = held_out_rows(val)
    reworded = evaluate(vlm, reworded_val, max_new_tokens=r.max_new_tokens, progress=False)
    wording = {"n": reworded["n"], "overall": reworded["overall"], "per_type": reworded["per_type"],
               "as_written": _subset_score(res, set(index))}
    maj = majority_baseline(val)
    styles = by_style(val, res, blind)
    other = None
    if r.train_style is not None:           # the other style's training pictures: a larger cross-style test
        cross_rows = other_style_rows(data_dir, r.train_style, r.val_rows, r.pair_share())
        cross = evaluate(vlm, cross_rows, max_new_tokens=r.max_new_tokens, progress=False)
        other = {"n": cross["n"], "per_type": cross["per_type"],
                 "majority_per_type": majority_baseline(cross_rows)["per_type"]}
    return val, res, blind, wording, maj, styles, other


if __name__ == "__main__":
    raise SystemExit(main())
