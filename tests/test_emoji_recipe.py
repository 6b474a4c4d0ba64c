"""The emoji recipe: caption mining on hand-made rows, and a one-minute smoke run of recipes/emoji.sh.

The full recipe is not run here (too long); `--quick` runs the same pipeline end to end with a small
model on the data `minimind-v data emoji` builds from the committed sample of its npm packages (conftest
`emoji_data`: 139 training rows, 60 of its 69 validation rows; about 45 s of CPU time), and the test
checks what a user relies on: the model folder loads and answers, every task is scored against
the blind and majority baselines, the loss went down, and replies take the form the question asks for.
"""
from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections import Counter

import pytest

from conftest import ROOT
from minimind_v.recipes.emoji import (_read_rows, _write_rows, by_style, caption, category_rows, concept_labels,
                                      concept_rows, emoji_key, family_key, mine_captions, other_style_rows,
                                      picture_facts, row_facts, stratified, style_of, verification_rows)
from minimind_v.train.metrics import read_metrics


def _conv(*pairs):
    msgs = []
    for q, a in pairs:
        msgs += [{"role": "user", "content": q}, {"role": "assistant", "content": a}]
    msgs[0]["content"] = "<image>\n" + msgs[0]["content"]
    return msgs


def _row(name, *pairs):
    return {"conversations": json.dumps(_conv(*pairs)), "image_bytes": b"png:" + name.encode(), "image_names": name}


def test_row_facts_reads_every_template():
    facts = row_facts(_conv(
        ("Describe this image.", "The image shows the beaver emoji. It is a mammal from the Animals & Nature "
                                 "category. Related words: dam."),
        ("Is this a person?", "No, this is the beaver emoji.")))
    assert facts == {"subject": "beaver emoji", "kind": "a mammal", "category": "Animals & Nature"}
    facts = row_facts(_conv(
        ("What kind of thing is this?", "It is a person in a role or job: the cook emoji with dark skin tone."),
        ("Which of these categories does this emoji belong to: Flags, People & Body or Objects?", "People & Body")))
    assert facts == {"kind": "a person in a role or job", "subject": "cook emoji with dark skin tone",
                     "category": "People & Body"}
    facts = row_facts(_conv(("Does this image show the flag of Chad?",
                             "No, this is the flag of Romania, not the flag of Chad.")))
    assert facts == {"subject": "flag of Romania"}          # not "flag of Chad"
    assert row_facts(_conv(("Give some keywords for this emoji.", "dam, teeth."))) == {}


def test_caption_wording():
    beaver = {"subject": "beaver emoji", "kind": "a mammal", "category": "Animals & Nature"}
    # the data's own 'Describe' wording (the recipe's)
    assert caption(beaver) == "The image shows the beaver emoji. It is a mammal from the Animals & Nature category."
    assert caption({"subject": "flag of Chad", "category": "Flags"}) == \
        "The image shows the flag of Chad. It belongs to the Flags category."
    assert caption({"subject": "cat face", "kind": "a cat face"}) == "The image shows the cat face. It is a cat face."
    assert caption({"kind": "a mammal"}) is None


def test_keys_group_styles_and_skin_tones():
    assert emoji_key("google/1f44b-1f3fd.png") == emoji_key("twitter/1f44b-1f3fd.png") == "1f44b-1f3fd"
    assert family_key("twitter/1f44b-1f3fd.png") == family_key("google/1f44b.png") == "1f44b"
    assert family_key("google/1f468-200d-1f373.png") == "1f468-200d-1f373"


def test_mine_captions_fills_facts_from_other_style_and_tone():
    rows = [
        _row("google/1f9d1-1f3fd-200d-1f373.png",
             ("What emoji is this?", "This is the cook emoji with medium skin tone."),
             ("Which category does this emoji belong to?", "It belongs to the People & Body category.")),
        _row("twitter/1f9d1-1f3fd-200d-1f373.png",
             ("What type of emoji is this?", "It is a person in a role or job: the cook emoji with medium skin tone.")),
        _row("twitter/1f9d1-1f3ff-200d-1f373.png",       # another tone: kind and category, not the subject
             ("Name this emoji.", "This is the cook emoji with dark skin tone.")),
        _row("google/1f9ab.png", ("Give some keywords for this emoji.", "dam, teeth.")),   # no subject: left out
    ]
    caps, counts = mine_captions(rows)
    assert counts == {"pictures": 4, "captioned": 3, "with_category": 3, "with_kind": 3}
    texts = {r["image_names"]: json.loads(r["conversations"]) for r in caps}
    assert set(texts) == {r["image_names"] for r in rows[:3]}
    want = "It is a person in a role or job from the People & Body category."
    assert texts["google/1f9d1-1f3fd-200d-1f373.png"][1]["content"] == \
        "The image shows the cook emoji with medium skin tone. " + want
    assert texts["twitter/1f9d1-1f3ff-200d-1f373.png"][1]["content"] == \
        "The image shows the cook emoji with dark skin tone. " + want
    assert texts["google/1f9d1-1f3fd-200d-1f373.png"][0]["content"].startswith("<image>\n")
    assert [r["image_bytes"] for r in caps] == [r["image_bytes"] for r in rows[:3]]


def test_verification_rows_accept_own_name_and_refuse_others():
    facts = [{"subject": "goat emoji", "kind": "a mammal"}, {"subject": "hedgehog emoji", "kind": "a mammal"},
             {"subject": "ram emoji", "kind": "a mammal"}, {"subject": "salt emoji", "kind": "a food"},
             {"kind": "a food"}]                                             # no subject: no question
    rows = [{"image_bytes": bytes([i]), "image_names": f"google/{i}.png"} for i in range(len(facts))]
    out = verification_rows(rows, facts, per_picture=40, same_kind=1.0, seed=3)
    assert len(out) == 4 * 40 and all(r["image_bytes"] != bytes([4]) for r in out)
    answers = Counter()
    for r in out:
        q, a = (m["content"] for m in json.loads(r["conversations"]))
        own = facts[r["image_bytes"][0]]
        asked = re.match(r"<image>\n(?:Is this|Does this image show) the (.+)\?$", q)[1]
        if asked == own["subject"]:
            assert a == f"Yes, this is the {asked}."
            answers["yes"] += 1
        else:
            assert a == f"No, this is the {own['subject']}, not the {asked}."
            other = next(f for f in facts if f.get("subject") == asked)
            assert other.get("kind") == own["kind"] or own["subject"] == "salt emoji"   # same kind when one exists
            answers["no"] += 1
    assert 60 < answers["yes"] < 100 and answers["yes"] + answers["no"] == 160
    assert verification_rows(rows, facts, 1, seed=3) == verification_rows(rows, facts, 1, seed=3)


def test_stratified_subset_keeps_every_task():
    rows = [{"task": t, "i": i} for i, t in enumerate("aaaaabbc")]
    assert [r["i"] for r in stratified(rows, 5)] == [0, 5, 7, 1, 6]
    assert sorted(r["i"] for r in stratified(rows, 100)) == list(range(8))


def test_competing_answers_rescore():
    """evaluate() scores with rule 5: the other answers of the same task compete."""
    from types import SimpleNamespace
    from minimind_v.eval.evaluate import evaluate
    replies = ["It is a person in a role or job: the cook emoji.", "It is a person in a role or job: ...",
               "Yes, this is the cook emoji."]
    rows = [{"task": t, "answer": a, "conversations": json.dumps([{"role": "user", "content": "Which?"}])}
            for t, a in (("kind", "person"), ("kind", "person in a role or job"), ("yesno", "yes"))]
    vlm = SimpleNamespace(model=SimpleNamespace(cfg=SimpleNamespace(vision=None)),
                          answer_batch=lambda convs, imgs, **kw: replies[:len(convs)])
    res = evaluate(vlm, rows, progress=False)
    assert [p["correct"] for p in res["predictions"]] == [False, True, True]
    assert res["per_type"] == {"kind": 0.5, "yesno": 1.0} and res["overall"] == pytest.approx(2 / 3)


def test_one_style_training_rows(tmp_path):
    """train_style keeps one art style's pictures only (the cross-style split), and says so when there is none."""
    rows = [_row(f"{st}/1f{i}.png", ("What is this?", "x")) for i, st in enumerate(["google", "twitter"] * 3)]
    path = _write_rows(rows, tmp_path / "train.parquet")
    assert [style_of(r["image_names"]) for r in _read_rows(path, style="twitter")] == ["twitter"] * 3
    assert [r["image_names"] for r in _read_rows(path, limit=2, style="google")] == ["google/1f0.png", "google/1f2.png"]
    assert len(_read_rows(path)) == 6
    with pytest.raises(ValueError, match="noto"):
        _read_rows(path, style="noto")


def test_by_style_groups_one_scoring():
    """by_style splits one scored run by the pictures' art style, each with its own majority baseline;
    a skipped (bad) row is left out of its style's count rather than shifting the others."""
    val = [{"image_names": n, "task": t, "answer": a} for n, t, a in
           [("google/a.png", "yesno", "yes"), ("google/b.png", "yesno", "no"), ("google/c.png", "yesno", "no"),
            ("twitter/a.png", "yesno", "yes"), ("twitter/b.png", "category", "Flags")]]
    res = {"predictions": [{"row": i, "type": val[i]["task"], "correct": c}
                           for i, c in [(0, True), (1, True), (3, False), (4, True)]]}       # row 2 skipped
    blind = {"predictions": [{"row": i, "type": val[i]["task"], "correct": i == 1} for i in range(5)]}
    st = by_style(val, res, blind)
    assert set(st) == {"google", "twitter"}
    assert st["google"]["n"] == 2 and st["google"]["overall"] == 1.0 and st["google"]["blind"] == pytest.approx(1 / 3)
    assert st["google"]["majority_per_type"]["yesno"] == pytest.approx(2 / 3)
    assert st["twitter"]["per_type"] == {"category": 1.0, "yesno": 0.0} and st["twitter"]["overall"] == 0.5


def test_script_needs_two_arguments():
    p = subprocess.run(["bash", str(ROOT / "recipes" / "emoji.sh"), "only-one"], capture_output=True, text=True)
    assert p.returncode == 2 and "usage" in p.stderr


def test_unknown_style_and_missing_data_exit_with_one_line(tmp_path, emoji_data):
    from minimind_v.recipes.emoji import main
    with pytest.raises(SystemExit, match="emoji_train.parquet"):
        main(["--data", str(tmp_path), "--out", str(tmp_path / "out"), "--quick"])
    data = emoji_data
    with pytest.raises(SystemExit, match="art style 'noto'.*google, twitter"):
        main(["--data", str(data), "--out", str(tmp_path / "out"), "--quick", "--set", "train_style=noto"])


def test_missing_data_is_a_clear_error(tmp_path):
    from minimind_v.recipes.emoji import run_emoji
    with pytest.raises(FileNotFoundError, match="emoji_train.parquet"):
        run_emoji(tmp_path, tmp_path / "out", quick=True)


def test_quick_recipe_smoke(tmp_path, emoji_data):
    """recipes/emoji.sh --quick: the whole pipeline in about a minute on one thread. The sample data has 139
    training rows (the quick run takes 400 of the full data), so it makes more passes over them."""
    data = emoji_data
    out = tmp_path / "run"
    env = dict(os.environ, PYTHON=sys.executable, OMP_NUM_THREADS="1")
    p = subprocess.run(["bash", str(ROOT / "recipes" / "emoji.sh"), str(data), str(out), "--quick", "--threads", "1",
                        "--set", "sft_epochs=30", "caption_epochs=4", "encoder_epochs=10"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "majority" in p.stdout and "model folder:" in p.stdout

    s = json.loads((out / "summary.json").read_text())
    tasks = {"yesno", "name_yesno", "name", "name_short", "mc", "kind", "category", "category_list", "skin_tone",
             "flag_place"}
    assert set(s["per_type"]) == tasks == set(s["blind_per_type"]) == set(s["majority_per_type"])
    assert s["n_eval"] == 60 and sum(s["n_per_type"].values()) == 60
    assert s["versions"]["torch"] and s["versions"]["transformers"]
    assert set(s["by_style"]) == {"google", "twitter"} and sum(v["n"] for v in s["by_style"].values()) == 60
    assert s["captions"]["pictures"] == 139 and s["captions"]["captioned"] > 0.9 * 139
    # the encoder was warmed up on its own heads first (category, kind, which emoji), then kept frozen
    assert s["encoder_warmup"]["steps"] > 0 and (out / "encoder" / "config.json").exists()
    assert {"category", "kind", "emoji"} <= set(s["encoder_warmup"]["classes"])
    # and on the twin loss, which pairs each emoji's two drawings: it fell (the first tenth of the steps
    # against the last)
    warm = s["encoder_warmup"]
    assert warm["twin_pairs"] > 50 and warm["twin_loss"] < 0.8 * warm["twin_loss_first"]
    assert any((out / "encoder_cache").rglob("*.safetensors"))
    # OUT/model stands alone: the frozen encoder is copied in, not pointed at
    assert json.loads((out / "model" / "config.json").read_text())["vision"]["path"] == "vision_encoder"
    assert (out / "model" / "vision_encoder" / "config.json").exists()
    assert (out / "loss.png").stat().st_size > 1000

    # the majority baseline is what it says: each task's most frequent answer's share
    preds = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    for task in ("yesno", "category"):
        answers = Counter(p["answer"] for p in preds if p["type"] == task)
        assert s["majority_per_type"][task] == pytest.approx(answers.most_common(1)[0][1] / sum(answers.values()))

    # training worked: the vlm-sft loss fell, and the reply's form follows the question (the data's
    # templates for category and kind questions), so the model reads the prompt, not only the picture
    sft = read_metrics(out / "sft" / "metrics.jsonl")
    pre = read_metrics(out / "pretrain" / "metrics.jsonl")
    assert sft[-1]["loss"] < sft[0]["loss"] - 1.0 and pre[-1]["loss"] < pre[0]["loss"]

    def share(task, prefix):
        replies = [p["reply"] for p in preds if p["type"] == task]
        return sum(r.startswith(prefix) for r in replies) / len(replies)
    assert share("category", "It belongs to the ") >= 0.8
    # (9 kind questions; with the noisy questions the 400-row model answers two of them with a name)
    assert share("kind", "It is a") >= 0.7, [p["reply"] for p in preds if p["type"] == "kind"]
    assert share("category", "It is a") == 0

    # OUT/model is a complete model folder that loads and answers about a picture
    from minimind_v.data.parquet import ParquetRows, row_images
    from minimind_v.image import open_image
    from minimind_v.pipeline import VLM
    vlm = VLM.load(out / "model")
    img = open_image(row_images(ParquetRows([data / "emoji_val.parquet"])[0])[0])
    reply = vlm.answer("What emoji category is this in?", [img], max_new_tokens=16)
    assert reply.startswith("It belongs to the "), reply

    # the warm-up is seeded and the training stages seed themselves: a rerun on this run's encoder
    # (encoder_from, no warm-up) repeats it answer for answer
    again = tmp_path / "again"
    p = subprocess.run([sys.executable, "-m", "minimind_v.recipes.emoji", "--data", str(data), "--out", str(again),
                        "--quick", "--threads", "1", "--set", "sft_epochs=30", "caption_epochs=4",
                        "encoder_epochs=10", f"encoder_from={out / 'encoder'}"],
                       capture_output=True, text=True, env=env, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    assert "warm-up skipped" in p.stdout and not (again / "encoder").exists()
    assert (again / "predictions.jsonl").read_text() == (out / "predictions.jsonl").read_text()


def test_concept_labels_spread_by_kind():
    """A yes/no answer about one picture is given to every picture of the same kind, unless the kind was
    answered both ways."""
    rows = [
        _row("google/1f42d.png", ("What kind of thing is this?", "It is a mammal: the mouse face."),
             ("Is this an animal?", "Yes, this is the mouse face.")),
        _row("twitter/1f42e.png", ("What type of emoji is this?", "It is a mammal: the cow face.")),
        _row("google/1f697.png", ("What kind of thing is this?", "It is a ground transport item: the automobile."),
             ("Does this image show an animal?", "No, this is the automobile."),
             ("Is this a vehicle?", "Yes, this is the automobile.")),
        _row("google/1f6b2.png", ("What kind of thing is this?", "It is a ground transport item: the bicycle."),
             ("Is this a vehicle?", "No, this is the bicycle.")),            # the kind answered both ways
        _row("google/1f9ab.png", ("Give some keywords for this emoji.", "dam, teeth.")),   # kind unknown
    ]
    labels = concept_labels(rows, picture_facts(rows))
    assert labels == {"a vehicle": [None] * 5, "an animal": ["yes", "yes", "no", "no", None]}


def test_concept_rows_ask_what_the_kind_answers():
    """Every picture with a subject gets a concept question its kind answers, in the data's answer form;
    about half are "yes" where the kind has concepts both ways."""
    rows = [
        _row("google/1f42d.png", ("What kind of thing is this?", "It is a mammal: the mouse face."),
             ("Is this an animal?", "Yes, this is the mouse face."),
             ("Is this a vehicle?", "No, this is the mouse face.")),
        _row("twitter/1f42e.png", ("What type of emoji is this?", "It is a mammal: the cow face.")),
        _row("google/1f697.png", ("What kind of thing is this?", "It is a ground transport item: the automobile."),
             ("Does this image show an animal?", "No, this is the automobile.")),
        _row("google/1f9ab.png", ("Give some keywords for this emoji.", "dam, teeth.")),   # nothing known
    ]
    facts = picture_facts(rows)
    out = concept_rows(rows, facts, per_picture=30, seed=5)
    assert len(out) == 3 * 30 and all(r["image_names"] != "google/1f9ab.png" for r in out)
    said = Counter()
    for r in out:
        q, a = (m["content"] for m in json.loads(r["conversations"]))
        concept = re.match(r"<image>\n(?:Is this|Does this image show) (.+)\?$", q)[1]
        subject = facts[[x["image_names"] for x in rows].index(r["image_names"])]["subject"]
        truth = {("a mammal", "an animal"): "Yes", ("a mammal", "a vehicle"): "No",
                 ("a ground transport item", "an animal"): "No"}
        kind = "a mammal" if "face" in subject else "a ground transport item"
        assert a == f"{truth[(kind, concept)]}, this is the {subject}."
        said[(kind, a[:2])] += 1
    assert said[("a ground transport item", "No")] == 30          # its only known concept is a "no"
    assert 15 < said[("a mammal", "Ye")] < 45 and said[("a mammal", "Ye")] + said[("a mammal", "No")] == 60
    assert concept_rows(rows, facts, 1, seed=5) == concept_rows(rows, facts, 1, seed=5)


def test_encoder_from_must_be_an_encoder_folder(tmp_path, emoji_data):
    from dataclasses import replace

    from minimind_v.recipes.emoji import QUICK, run_emoji
    data = emoji_data
    with pytest.raises(FileNotFoundError, match="encoder_from"):
        run_emoji(data, tmp_path / "out", recipe=replace(QUICK, encoder_from=str(tmp_path)), threads=1)


def test_category_rows_ask_in_the_data_wording():
    facts = [{"subject": "beaver emoji", "category": "Animals & Nature"}, {"category": "Flags"}, {"kind": "a food"}]
    rows = [{"image_bytes": bytes([i]), "image_names": f"google/{i}.png"} for i in range(3)]
    out = category_rows(rows, facts, per_picture=20, seed=1)
    assert len(out) == 40 and {r["image_bytes"] for r in out} == {b"\x00", b"\x01"}   # no category: no row
    asked = Counter()
    for r in out:
        q, a = (m["content"] for m in json.loads(r["conversations"]))
        asked[q] += 1
        assert a == f"It belongs to the {facts[r['image_bytes'][0]]['category']} category."
    assert set(asked) == {"<image>\nWhich category does this emoji belong to?",
                          "<image>\nWhat emoji category is this in?"}


def test_repeated_set_options_all_apply():
    from minimind_v.recipes.emoji import parse_args
    _, r = parse_args(["--data", "d", "--set", "train_style=google", "--set", "encoder_restyle=0.5", "hidden=64"])
    assert (r.train_style, r.encoder_restyle, r.hidden) == ("google", 0.5, 64)
    with pytest.raises(SystemExit, match="unknown recipe field 'hiden'"):
        parse_args(["--data", "d", "--set", "hiden=64"])


def test_other_style_rows_ask_about_the_unseen_style(tmp_path):
    """The larger cross-style test: every emoji family of the other style once, its category and kind."""
    rows = [_row("google/1f9ab.png", ("What type of emoji is this?", "It is a mammal: the beaver emoji."),
                 ("Which category does this emoji belong to?", "It belongs to the Animals & Nature category.")),
            _row("twitter/1f9ab.png", ("What is this?", "This is the beaver emoji.")),
            _row("twitter/1f44b-1f3fd.png", ("What emoji category is this in?", "It belongs to the People & Body category.")),
            _row("twitter/1f44b-1f3fb.png", ("What emoji category is this in?", "It belongs to the People & Body category.")),
            _row("twitter/1f600.png", ("What is this?", "x"))]
    _write_rows(rows, tmp_path / "emoji_train.parquet")
    got = other_style_rows(tmp_path, "google")
    # the Twitter beaver gets its facts from the Google row; one waving hand of two tones; no facts, no row
    assert [(r["image_names"], r["task"], r["answer"]) for r in got] == [
        ("twitter/1f9ab.png", "category", "Animals & Nature"), ("twitter/1f9ab.png", "kind", "mammal"),
        ("twitter/1f44b-1f3fd.png", "category", "People & Body")]
    questions = [json.loads(r["conversations"])[0]["content"] for r in got]
    assert questions == ["<image>\nWhat emoji category is this in?", "<image>\nWhat kind of thing is this?",
                         "<image>\nWhich category does this emoji belong to?"]      # the data's wordings, in turn
    assert [r["image_names"] for r in other_style_rows(tmp_path, "twitter")] == ["google/1f9ab.png"] * 2


def test_one_style_run_scores_the_other_style(tmp_path, capsys, emoji_data):
    """--set train_style=...: summary.json has the other style's training-file questions, scored."""
    import math

    import pyarrow.parquet as pq
    data = emoji_data
    from minimind_v.recipes.emoji import main
    main(["--data", str(data), "--out", str(tmp_path / "run"), "--quick", "--threads", "1",
          "--set", "train_style=twitter"])
    s = json.loads((tmp_path / "run" / "summary.json").read_text())
    other = s["other_style_train"]
    # the cross-style questions are about the families the twin loss did not pair (half of them): its
    # other drawings were never seen, not even as a twin
    cross = other_style_rows(data, "twitter", 60, twin_share=0.5)
    assert s["recipe"]["train_style"] == "twitter" and other["n"] == len(cross) and 20 < len(cross) < 60
    assert len(other_style_rows(data, "twitter", 60)) == 60
    assert s["encoder_warmup"]["twin_pairs"] > 20
    assert set(other["per_type"]) == set(other["majority_per_type"]) == {"category", "kind"}
    assert all(0 <= v <= 1 for v in other["per_type"].values())

    # the probes read the same run: name_yesno AUCs for the encoder and the LLM, the encoder across styles
    from minimind_v.recipes.emoji_probe import main as probe
    probe([str(tmp_path / "run"), "--data", str(data)])
    got = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    asked = pq.read_table(data / "emoji_val.parquet", columns=["task"]).column(0).to_pylist().count("name_yesno")
    assert got["name_yesno_n"] == asked and 0 < got["encoder_n"] <= asked and got["llm_train_n"] > 10
    assert all(0 <= got[k] <= 1 for k in ("llm_auc", "llm_train_auc"))
    # the encoder's AUC is over the few name_yesno questions whose named emoji it saw (3 here): NaN when
    # those are all "yes" or all "no", else a probability
    assert math.isnan(got["encoder_auc"]) or 0 <= got["encoder_auc"] <= 1
    st = got["style_probe"]
    assert st["train_style"] == "twitter" and st["category_n"] > 15 and st["identity_n"] > 15
    assert 0 <= st["identity_top1"] <= st["identity_top10"] <= 1 and 0 < st["category"] <= 1
    # even the quick warm-up gives features that find an unpaired Google picture's Twitter twin far above
    # chance (10 / identity_pool for the top 10)
    assert st["identity_top10"] > 3 * 10 / st["identity_pool"]


def test_probe_needs_a_run_folder(tmp_path):
    from minimind_v.recipes.emoji_probe import main as probe
    with pytest.raises(SystemExit, match="summary.json not found"):
        probe([str(tmp_path), "--data", str(tmp_path)])


def test_auc_orders_pairs():
    from minimind_v.recipes.emoji_probe import auc
    assert auc([3, 4], [1, 2]) == 1.0 and auc([1], [2]) == 0.0 and auc([1, 2], [1, 2]) == 0.5


def test_twins_pair_one_emoji_across_styles_and_keep_the_cross_style_test_unseen(tmp_path):
    """encoder_twins: both drawings of an emoji are paired (same code points, other style); with
    twin_share < 1 a fixed share of families is paired, the same for every seed, and the cross-style test
    reads only the others; a one-style run gets the other style's paired drawings as unlabelled twins."""
    from dataclasses import replace

    from minimind_v.recipes.emoji import EmojiRecipe, _warmup_pictures, other_style_pictures, paired_family, twin_index
    codes = [f"1f{600 + i:03x}" for i in range(40)]
    rows = ([_row(f"google/{c}.png", ("What is this?", "x")) for c in codes]
            + [_row(f"twitter/{c}.png", ("What is this?", "x")) for c in codes[:30]])       # 10 Google-only
    twins = twin_index(rows)
    assert twins[:30] == list(range(40, 70)) and twins[30:40] == [-1] * 10 and twins[40:] == list(range(30))
    # a hash of the family decides, not the seed: skin tones go together, and about the share is paired
    assert paired_family("google/1f44b-1f3fd.png", 0.5) == paired_family("twitter/1f44b.png", 0.5)
    share = sum(paired_family(f"google/{c}.png", 0.5) for c in [f"1f{i:03x}" for i in range(1000)]) / 1000
    assert 0.4 < share < 0.6 and all(paired_family(r["image_names"], 1.0) for r in rows)
    unpaired = {c for c in codes[:30] if not paired_family(f"google/{c}.png", 0.5)}
    assert 0 < len(unpaired) < 30
    assert {emoji_key(rows[i]["image_names"]) for i in other_style_pictures(rows, "google", 0.5)} == unpaired
    assert len(other_style_pictures(rows, "google")) == 30

    _write_rows(rows, tmp_path / "emoji_train.parquet")
    google = rows[:40]
    tasks = {"emoji": [emoji_key(r["image_names"]) for r in google]}
    r = replace(EmojiRecipe(), train_style="google", encoder_twins=1.0)
    assert r.pair_share() == 0.5 and replace(r, train_style=None).pair_share() == 1.0   # the defaults
    pictures, pairs = _warmup_pictures(r, google, tasks, tmp_path)
    extra = pictures[40:]
    assert {emoji_key(p["image_names"]) for p in extra} == set(codes[:30]) - unpaired
    assert all(style_of(p["image_names"]) == "twitter" for p in extra)
    assert tasks["emoji"][40:] == [None] * len(extra) and len(tasks["emoji"]) == len(pictures)   # unlabelled
    for i, t in enumerate(pairs):
        if t >= 0:
            assert emoji_key(pictures[t]["image_names"]) == emoji_key(pictures[i]["image_names"])
            assert paired_family(pictures[i]["image_names"], 0.5)
    assert sum(t >= 0 for t in pairs) == 2 * len(extra)
    # twins off: the pictures are the rows, nothing paired
    assert _warmup_pictures(replace(r, encoder_twins=0.0), google, {"emoji": []}, tmp_path) == (google, None)


def test_caption_paraphrase_rewords_the_caption_stage_questions(tmp_path):
    """caption_paraphrase: the caption stage's category and concept questions in the training wordings
    (emoji_wording.TRAIN) too, never in a held-out one; the captions and every answer stay as they were."""
    from dataclasses import replace

    from minimind_v.recipes.emoji import EmojiRecipe, _caption_stage_rows
    from minimind_v.recipes.emoji_wording import HELD_OUT, TRAIN
    rows = [_row(f"google/1f{i:03x}.png", ("What is this?", "This is the beaver emoji."),
                 ("What type of emoji is this?", "It is a mammal: the beaver emoji."),
                 ("Which category does this emoji belong to?", "It belongs to the Animals & Nature category."),
                 ("Is this an animal?", "Yes, this is the beaver emoji.")) for i in range(60)]
    facts = picture_facts(rows)

    def stage(share):
        caps, _, _ = _caption_stage_rows(rows, facts, replace(EmojiRecipe(), caption_paraphrase=share, question_noise=0.0), 0,
                                         tmp_path / str(share), lambda m: None)
        return [[m["content"] for m in json.loads(r["conversations"])] for r in caps]
    plain, mixed = stage(0.0), stage(1.0)
    assert len(plain) == len(mixed) and [c[1] for c in plain] == [c[1] for c in mixed]   # answers kept
    trained = {w.split("{}")[0] for ws in TRAIN.values() for w in ws}
    held = {w.split("{}")[0] for ws in HELD_OUT.values() for w in ws}
    changed = [m[0].removeprefix("<image>\n") for p, m in zip(plain, mixed) if p[0] != m[0]]
    assert len(changed) > 60                          # the category and concept questions, not the captions
    assert all(any(q.startswith(t) for t in trained) and not any(q.startswith(h) for h in held) for q in changed)
    assert all(p[0] == m[0] for p, m in zip(plain, mixed) if p[0].endswith("Describe this emoji."))


def test_one_style_twins_must_leave_families_unpaired(tmp_path, capsys):
    """A one-style run whose twin loss paired every family would read, in its cross-style test, drawings
    the warm-up saw: refused in one line before any work, as are out-of-range twin settings."""
    from minimind_v.recipes.emoji import main
    for bad, says in ((["train_style=google", "encoder_twins=1", "twin_share=1"], "needs twin_share < 1"),
                      (["twin_share=0"], "twin_share in (0, 1]"), (["encoder_twins=-1"], "encoder_twins must be")):
        with pytest.raises(SystemExit, match=re.escape(says)):
            main(["--data", str(tmp_path), "--out", str(tmp_path / "run"), "--set", *bad])
    assert not (tmp_path / "run").exists()
