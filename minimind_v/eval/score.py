"""Scoring rules: is a free-form reply correct for a short reference answer?

The same rules serve `minimind-v eval`, the demo and the emoji benchmark:

1. Normalise both sides: Unicode NFKC, lower case, typographic quotes/apostrophes -> ASCII ('’' -> "'"),
   hyphens/dashes kept inside words ("medium-light"), every other punctuation mark -> space, spaces collapsed.
2. yes/no answers (reference "yes" or "no"): the reply's first word decides.
3. Multiple choice (reference a single letter a-e, or the reply starts with a letter + ')' or '.'):
   the reply is correct when its first word is that letter (or the option text matches, see 4).
4. Otherwise the reply is correct when it contains the normalised reference as whole words
   ("It is medium-light." contains "medium-light"; "reddish" does not contain "red").
5. Competing answers (optional `others`: the other reference answers of the same question type): a
   match that lies inside a longer competing answer does not count. Without it, the emoji `kind`
   answer "person" was credited to "It is a person in a role or job: ..." (4 such replies of 76 in a
   trained model's run); with it, only a "person" outside "person in a role or job" counts.
6. When a reply names several competing answers, the last one named is its answer: "The circle is on
   the left and the square on the right, so it is to the left." answers "left", and "It is to the left
   or to the right." answers "right" (before this rule any mention counted).
"""
from __future__ import annotations

import re
import unicodedata

_QUOTES = str.maketrans({"\u2019": "'", "\u2018": "'", "\u201c": '"', "\u201d": '"', "\u2032": "'",
                         "\u2013": "-", "\u2014": "-", "\u2010": "-", "\u2011": "-"})


def normalize(text: str) -> str:
    text = unicodedata.normalize("NFKC", text or "").translate(_QUOTES).lower()
    text = re.sub(r"[^\w\s'-]", " ", text)          # punctuation -> space (keep ' and - inside words)
    text = re.sub(r"(?<!\w)['-]|['-](?!\w)", " ", text)  # quotes/dashes not inside a word
    return " ".join(text.split())


def first_word(text: str) -> str:
    words = normalize(text).split()
    return words[0] if words else ""


def _spans(phrase: str, text: str) -> list[tuple[int, int]]:
    """(start, end) of every whole-word occurrence of `phrase` in `text` (both normalised)."""
    return [(m.start(1), m.end(1)) for m in re.finditer(r"(?:^| )(" + re.escape(phrase) + r")(?= |$)", text)]


def is_correct(reply: str, answer: str, others=()) -> bool:
    ref = normalize(answer)
    if not ref:
        return False
    if ref in ("yes", "no"):
        return first_word(reply) == ref
    raw = (reply or "").strip().lower()
    if len(ref) == 1 and ref.isalpha():                     # multiple-choice letter
        m = re.match(r"^\(?([a-e])[\).:\s]|^\(?([a-e])$", raw)
        if m:
            return (m.group(1) or m.group(2)) == ref
        return first_word(reply) == ref
    text = normalize(reply)
    if not _spans(ref, text):
        return False
    # every whole-word mention of the reference or of a competing answer, less those inside a longer one
    named = [(a, b, ans) for ans in {ref, *map(normalize, others)} if ans for a, b in _spans(ans, text)]
    named = [m for m in named if not any(o[0] <= m[0] and m[1] <= o[1] and o[1] - o[0] > m[1] - m[0]
                                         for o in named)]
    return bool(named) and max(named, key=lambda m: m[0])[2] == ref            # rule 6: the last one named
