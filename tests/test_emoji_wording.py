"""Other wordings of the emoji questions (recipes/emoji_wording.py): what is reworded, and that the held-out
wordings are never among the trained ones or the data's own."""
from __future__ import annotations

import json

from minimind_v.recipes.emoji_wording import (HELD_OUT, TRAIN, WORDINGS, held_out_rows, noise_rows, reword,
                                              reword_rows, word_pool)


def _row(*turns, **extra):
    conv = []
    for q, a in turns:
        conv += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    return {"conversations": json.dumps(conv), "image_names": "google/1f410.png", **extra}


def test_reword_keeps_what_is_asked():
    first = lambda options: options[0]  # noqa: E731
    assert reword("Does this image show the goat emoji?", HELD_OUT, first) == "Am I looking at the goat emoji?"
    assert reword("Is this an animal?", HELD_OUT, first) == "Am I looking at an animal?"
    assert reword("Is this food or a drink?", TRAIN, first) == "Is this picture food or a drink?"
    assert reword("Which category does this emoji belong to?", TRAIN, first) == "What category is this emoji from?"
    assert reword("Name this emoji.", HELD_OUT, first) == "What is this emoji called?"
    # multiple choice and "name only" keep their own constraints: not reworded
    assert reword("What is this? Reply with just the name.", TRAIN, first) is None
    assert reword("Which of these is shown: goat, ram, ewe or ox?", TRAIN, first) is None


def test_held_out_wordings_are_never_trained_on():
    for kind, (_, train, held) in WORDINGS.items():
        assert not set(train) & set(held), kind
        for w in held:                      # nor are they the data's own wordings
            assert reword(w.format("the goat emoji" if "{}" in w else ""), TRAIN, lambda o: o[0]) is None, w


def test_reword_rows_share_and_answers():
    rows = [_row(("<image>\nWhich skin tone is shown?", "It has a dark skin tone."),
                 ("Give some keywords for this emoji.", "goat, farm.")) for _ in range(200)]
    out, n = reword_rows(rows, 0.5, seed=1)
    asked = [json.loads(r["conversations"]) for r in out]
    changed = sum(c[0]["content"] != "<image>\nWhich skin tone is shown?" for c in asked)
    assert n == changed and 70 < changed < 130
    assert all(c[0]["content"].startswith("<image>\n") for c in asked)
    assert all(c[0]["content"][8:] in TRAIN["skin_tone"] + ("Which skin tone is shown?",) for c in asked)
    assert all(c[1]["content"] == "It has a dark skin tone." and c[2]["content"] == "Give some keywords for this emoji."
               for c in asked)
    assert reword_rows(rows, 0.5, seed=1) == (out, n)
    assert reword_rows(rows, 0.0)[1] == 0
    assert reword_rows(rows, 1.0, kinds=["category", "yesno"])[1] == 0            # skin tone left as written
    assert reword_rows(rows, 1.0, kinds=["skin_tone"])[1] == 200


def test_held_out_rows_leave_the_originals_alone():
    val = [_row(("<image>\nWhat emoji category is this in?", ""), answer="Animals & Nature", task="category"),
           _row(("<image>\nWhich of these is shown: goat, ram, ewe or ox?", ""), answer="goat", task="mc"),
           _row(("<image>\nIs this a person?", ""), answer="no", task="yesno")]
    before = json.dumps(val)
    new, index = held_out_rows(val)
    assert json.dumps(val) == before and index == [0, 2]
    assert [json.loads(r["conversations"])[0]["content"] for r in new] == \
        ["<image>\nIn which emoji category would you find this?", "<image>\nAm I looking at a person?"]
    assert [(r["answer"], r["task"]) for r in new] == [("Animals & Nature", "category"), ("no", "yesno")]


def test_noise_rows_drop_and_insert_words_but_never_what_is_named():
    rows = [_row(("<image>\nWhich category does this emoji belong to?", "It belongs to the Animals & Nature category."),
                 ("Does this image show the goat emoji?", "No, this is the ram emoji."),
                 ("What is this? Reply with just the name.", "ram")),
            _row(("<image>\nDoes this emoji show food or a drink?", "No, this is the ram emoji: a mammal, farm.")),
            _row(("<image>\nWhich words are associated with this emoji?", "sheep, wool, zodiac."))]
    pool = word_pool(rows)
    # inserted words come from answers only: a question's own word would change what it asks
    assert {"sheep", "wool", "zodiac", "mammal", "farm", "nature"} <= set(pool)
    assert not {"category", "goat", "food", "drink", "this", "emoji", "name"} & set(pool)
    out, n = noise_rows(rows * 100, 1.0, seed=3)
    noisy = {"category": set(), "goat": set(), "food": set()}
    for r, original in zip(out, rows * 100):
        conv, before = json.loads(r["conversations"]), json.loads(original["conversations"])
        assert [m["content"] for m in conv[1::2]] == [m["content"] for m in before[1::2]]  # answers untouched
        assert conv[0]["content"].startswith("<image>\n") and conv[0]["content"].endswith("?")
        if "words are associated" in before[0]["content"]:   # other kinds of question are left alone
            assert conv == before
        elif "category" in before[0]["content"]:
            noisy["category"].add(conv[0]["content"])
            assert "category" in conv[0]["content"]          # the answer says "category": never dropped
            noisy["goat"].add(conv[2]["content"])
            assert "goat emoji" in conv[2]["content"] or "goat " in conv[2]["content"]   # what is named: kept
            assert conv[4]["content"] == "What is this? Reply with just the name."   # "name only": left alone
        else:
            noisy["food"].add(conv[0]["content"])
            assert all(w in conv[0]["content"].split() for w in ("food", "or", "a"))
            assert "drink?" in conv[0]["content"].split()
    assert all(len(v) > 10 for v in noisy.values())    # many different noisy copies
    words = {w for q in noisy["category"] for w in q.replace("<image>\n", "").rstrip("?").split()}
    assert words - set("Which category does this emoji belong to".split()) <= set(pool)   # inserted from the pool
    assert words - set("Which category does this emoji belong to".split())                # and some were
    assert any(len(q.split()) < 7 for q in noisy["category"])                               # and some dropped
    assert 200 < n <= 300                             # 300 such questions, most changed
    assert noise_rows(rows, 0.0)[1] == 0 and noise_rows(rows, 0.0)[0][0] is rows[0]
