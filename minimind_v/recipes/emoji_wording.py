"""Other wordings of the emoji data's questions: some to train on, others kept for the evaluation only.

The emoji training file asks each kind of question in two fixed wordings ("Which category does this
emoji belong to?" / "What emoji category is this in?"), and emoji_val asks in the same ones, so a score on
emoji_val cannot tell a model that understood the question from one that learned two strings. This module
gives each kind of question more wordings in two disjoint sets:

- `TRAIN` wordings: `reword_rows(rows, share, seed)` rewrites that share of the training file's matching
  questions with one of them (answers untouched), the emoji recipe's `paraphrase` setting;
- `HELD_OUT` wordings: never trained on; `held_out_rows(val_rows)` asks emoji_val's questions in them, so
  the recipe can report how a model does on phrasings it never saw next to the same questions as written.

Ten wordings are still a handful of strings to a language model trained from nothing: it learns them and
little else. `noise_rows` (the recipe's `question_noise`) adds no wording of its own: it drops words of a
training question and slips in words the training file's answers use, so the model has to find what is
asked from the words that matter ("category", "person") wherever they stand, among words it has not seen
there. The words of what a question names ("a person" in "Is this a person?") and those its answer
repeats are never dropped.

A question is reworded only when it matches one of the patterns below exactly (the multiple-choice and
"name only" questions carry their own constraints and are left alone). The wordings are written here
for this purpose; they keep what is asked and the answer's form.
"""
from __future__ import annotations

import json
import random
import re

# kind of question -> (the data's own wordings, with the asked object as a group when there is one,
#                      wordings to train on, wordings held out for the evaluation)
_CONCEPT = r"(an? .+|food or a drink|sky or weather|sports equipment)"
WORDINGS: dict[str, tuple[str, tuple[str, ...], tuple[str, ...]]] = {
    "category": (r"(?:Which category does this emoji belong to|What emoji category is this in)\?",
                 ("What category is this emoji from?", "Which emoji category is this?",
                  "Tell me the category of this emoji.", "What is the category of this emoji?",
                  "Which category is this in?", "Name the category of this emoji.",
                  "Which emoji category does this picture belong to?", "What category does this emoji have?"),
                 ("In which emoji category would you find this?", "This emoji is filed under which category?")),
    "kind": (r"(?:What kind of thing is this|What type of emoji is this)\?",
             ("What sort of thing is this?", "What kind of emoji is shown here?", "What kind of thing is shown?",
              "What sort of emoji is this?", "Tell me what kind of thing this is.", "What type of thing is this?",
              "What kind of thing does this emoji show?", "What is this, in general terms?"),
             ("What type of thing is pictured?", "Say what kind of thing this emoji shows.")),
    "yesno": (r"(?:Is this|Does this image show) " + _CONCEPT + r"\?",
              ("Is this picture {}?", "Does this emoji show {}?", "Does the picture show {}?", "Is it {}?",
               "Do you see {} here?", "Can you see {}?", "Does this emoji depict {}?", "Is the emoji {}?",
               "Tell me if this is {}.", "Is what this emoji shows {}?"),
              ("Am I looking at {}?", "Would you say this shows {}?")),
    "name_yesno": (r"(?:Is this|Does this image show) the (.+)\?",
                   ("Is this picture the {}?", "Does this emoji show the {}?", "Does the picture show the {}?",
                    "Is it the {}?", "Do you see the {} here?", "Can you see the {}?", "Is the emoji the {}?",
                    "Tell me if this is the {}."),
                   ("Am I looking at the {}?", "Would you say this is the {}?")),
    "skin_tone": (r"(?:Which skin tone is shown|What skin tone does this emoji have)\?",
                  ("What is the skin tone of this emoji?", "Which skin tone does this emoji use?",
                   "What skin tone is shown?", "Which skin tone is this?", "Tell me the skin tone of this emoji.",
                   "What skin tone does it have?"),
                  ("Tell me the skin tone in this picture.", "The skin tone here is which one?")),
    "name": (r"(?:Name this emoji|What emoji is this|What does this emoji show|What is shown in the image|What is this)[.?]",
             ("Which emoji is shown here?", "Tell me which emoji this is.", "What emoji is shown?",
              "Which emoji is this?", "What is this emoji?", "Name the emoji in this picture."),
             ("What is this emoji called?", "Identify this emoji.")),
    "flag_place": (r"(?:Whose flag is this|Which country or region does this flag belong to)\?",
                   ("Which country's flag is this?", "Which country or region is this flag from?",
                    "What country does this flag belong to?", "Whose flag is shown here?"),
                   ("This flag stands for which country or region?",)),
}
_PATTERNS = {kind: re.compile(rf"^{pat}$") for kind, (pat, _, _) in WORDINGS.items()}
TRAIN = {kind: w[1] for kind, w in WORDINGS.items()}
HELD_OUT = {kind: w[2] for kind, w in WORDINGS.items()}
# the data's own wordings, then each TRAIN wording with its "{}" a group ("Is it {}?" matches "Is it a flag?")
_KNOWN_PATTERNS = tuple(_PATTERNS.values()) + tuple(
    re.compile("^" + re.escape(w).replace(r"\{\}", "(.+)") + "$") for ws in TRAIN.values() for w in ws)


def reword(question: str, wordings: dict[str, tuple[str, ...]], pick) -> str | None:
    """`question` (without its <image> marker) in another wording from `wordings`, or None when it matches
    none of the patterns of the kinds `wordings` holds. `pick(options)` chooses one (random.choice, or a
    fixed rule)."""
    for kind, pattern in _PATTERNS.items():
        if kind in wordings and (m := pattern.match(question.strip())):
            return pick(wordings[kind]).format(*m.groups())
    return None


def _split_marker(content: str) -> tuple[str, str]:
    return ("<image>\n", content[len("<image>\n"):]) if content.startswith("<image>\n") else ("", content)


def _reword_turns(conversation: list[dict], wordings, pick, share: float, rng) -> list[dict]:
    out = []
    for m in conversation:
        if m["role"] == "user" and (share >= 1 or rng.random() < share):
            marker, text = _split_marker(m["content"])
            new = reword(text, wordings, pick)
            if new is not None:
                m = {**m, "content": marker + new}
        out.append(m)
    return out


def reword_rows(rows: list[dict], share: float, seed: int = 0, kinds: list[str] | None = None
                ) -> tuple[list[dict], int]:
    """Training rows with `share` of their matching questions in a `TRAIN` wording (seeded), only questions
    of the given `kinds` (keys of WORDINGS; None: all). Returns the rows (the others unchanged, the same
    dicts) and how many questions were reworded."""
    wordings = TRAIN if kinds is None else {k: TRAIN[k] for k in kinds}
    rng = random.Random(seed)
    out, changed = [], 0
    for r in rows:
        conv = json.loads(r["conversations"])
        new = _reword_turns(conv, wordings, rng.choice, share, rng)
        n = sum(a["content"] != b["content"] for a, b in zip(conv, new))
        changed += n
        out.append({**r, "conversations": json.dumps(new, ensure_ascii=False)} if n else r)
    return out, changed


_WORD = re.compile(r"[A-Za-z][A-Za-z'&-]*")


def word_pool(rows: list[dict]) -> list[str]:
    """What `noise_rows` inserts: the distinct words of the rows' answers that no question uses, sorted. A
    question's own words would change what it asks ("category" slipped into a kind question, "goat" into
    a yes/no one)."""
    answers, questions = set(), set()
    for r in rows:
        for m in json.loads(r["conversations"]):
            words = {w.lower() for w in _WORD.findall(m["content"].replace("<image>", ""))}
            (questions if m["role"] == "user" else answers).update(words)
    return sorted(answers - questions)


def noisy_question(question: str, keep: set[str], pool: list[str], rng, drop: float = 0.2,
                   insert: float = 0.15) -> str:
    """`question` with a word from `pool` inserted before each word with probability `insert` and each
    word dropped with probability `drop` (never one in `keep`, and never all of them); the final
    punctuation stays."""
    body, end = (question[:-1], question[-1]) if question[-1:] in "?." else (question, "")
    words = body.split()
    out = []
    for w in words:
        if rng.random() < insert:
            out.append(rng.choice(pool))
        if rng.random() >= drop or w.strip(",").lower() in keep:
            out.append(w)
    if not any(w in words for w in out):   # every word dropped: keep one
        out.append(rng.choice(words))
    return " ".join(out) + end


def noise_rows(rows: list[dict], share: float, seed: int = 0, pool: list[str] | None = None,
               drop: float = 0.2, insert: float = 0.15) -> tuple[list[dict], int]:
    """Training rows with `share` of their questions of the kinds in `WORDINGS` (matched in the data's
    wordings or a `TRAIN` one) made noisy by `noisy_question` (seeded): never dropped are the words of
    what a question names ("a person", "goat emoji") and those its answer repeats. The pool of inserted
    words defaults to the rows' own. Returns the rows (the others unchanged, the same dicts) and how many
    questions changed."""
    pool = pool or word_pool(rows)
    rng = random.Random(seed)
    out, changed = [], 0
    for r in rows:
        conv = json.loads(r["conversations"])
        new, n = [], 0
        for q, a in zip(conv[::2], conv[1::2]):
            marker, text = _split_marker(q["content"])
            m = _match(text) if q["role"] == "user" else None
            if m is not None and rng.random() < share:
                keep = {w.lower() for w in _WORD.findall(" ".join(m.groups()) + " " + a["content"])}
                noisy = noisy_question(text, keep, pool, rng, drop, insert)
                if noisy != text:
                    q, n = {**q, "content": marker + noisy}, n + 1
            new += [q, a]
        new += conv[len(new):]
        changed += n
        out.append({**r, "conversations": json.dumps(new, ensure_ascii=False)} if n else r)
    return out, changed


def _match(text: str) -> re.Match | None:
    """`text` (stripped) matched as a question of a kind in WORDINGS, in the data's own wording or a TRAIN
    one (group 1, when there is one, is what it names: "a person", "goat emoji"); None for any other."""
    text = text.strip()
    for pattern in _KNOWN_PATTERNS:
        if m := pattern.match(text):
            return m
    return None


def held_out_rows(rows: list[dict]) -> tuple[list[dict], list[int]]:
    """The evaluation rows that can be reworded (not multiple choice or "name only"), each asked in a
    `HELD_OUT` wording instead of its own, and their indices in `rows`. The wording is chosen by the row's
    index, so the set is the same every time; `rows` is not changed."""
    out, index = [], []
    for i, r in enumerate(rows):
        conv = r["conversations"]
        as_text = isinstance(conv, str)
        conv = json.loads(conv) if as_text else conv
        new = _reword_turns(conv, HELD_OUT, lambda options: options[i % len(options)], 1.0, None)
        if new != conv:
            out.append({**r, "conversations": json.dumps(new, ensure_ascii=False) if as_text else new})
            index.append(i)
    return out, index
