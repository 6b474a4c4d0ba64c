"""Other wordings of the emoji data's questions: some to train on, others kept for the evaluation only.

The emoji training file asks each kind of question in two fixed wordings ("Which category does this
emoji belong to?" / "What emoji category is this in?"), and emoji_val asks in the same ones, so a score on
emoji_val cannot tell a model that understood the question from one that learned two strings. This module
gives each kind of question more wordings in two disjoint sets:

- `TRAIN` wordings: `reword_rows(rows, share, seed)` rewrites that share of the training file's matching
  questions with one of them (answers untouched), the emoji recipe's `paraphrase` setting;
- `HELD_OUT` wordings: never trained on; `held_out_rows(val_rows)` asks emoji_val's questions in them, so
  the recipe can report how a model does on phrasings it never saw next to the same questions as written.

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
