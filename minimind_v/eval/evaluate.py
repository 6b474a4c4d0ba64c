"""Run a model over an evaluation parquet file and score its replies (rules in score.py).

Each row's conversation up to its last user turn is the prompt; the model's greedy reply is compared
with the row's short `answer`. Rows are grouped by `type` or `task` when the file has one. `blind=True`
replaces every picture with a blank one: a model that really looks at images drops towards the
majority-answer baseline (always giving each type's most frequent answer), which is reported too.
"""
from __future__ import annotations

from collections import Counter, defaultdict

from ..data.chatml import BadRow, count_markers, parse_conversations
from ..data.parquet import ParquetRows, row_images
from ..image import ImageError, open_image
from ..image import blank_image
from ..tokenizer import unicode_problem
from .score import is_correct, normalize


def load_eval_rows(files, limit: int | None = None) -> list[dict]:
    rows = ParquetRows(files)
    if "answer" not in rows.available:
        raise ValueError(f"{files} has no `answer` column: eval needs short reference answers")
    n = len(rows) if limit is None else min(limit, len(rows))
    return [rows[i] for i in range(n)]


def row_type(row: dict) -> str:
    return str(row.get("type") or row.get("task") or "all")


def usable_answer(value) -> str:
    """The row's reference answer as text, or BadRow: null or empty (`no_answer`), not text (`answer_not_text`:
    a list, an object, a float; an integer is taken as its digits) or not valid Unicode (`invalid_unicode`).
    Such a row cannot be scored right or wrong, so it is skipped and counted, never scored as wrong."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if value is None:
        raise BadRow("no_answer", "the answer is null")
    if not isinstance(value, str):
        raise BadRow("answer_not_text", f"the answer is a {type(value).__name__}, not text")
    bad = unicode_problem(value)
    if bad:
        raise BadRow("invalid_unicode", f"the answer is not valid Unicode ({bad})")
    if not normalize(value):
        raise BadRow("no_answer", "the answer is empty (nothing but spaces or punctuation)")
    return value


def majority_baseline(rows: list[dict]) -> dict:
    """Accuracy of always answering each type's most frequent (normalised) answer, over the rows that have
    a usable answer (pass `evaluate(...)["predictions"]` for exactly the rows it scored)."""
    by = defaultdict(Counter)
    n = 0
    for r in rows:
        try:
            answer = usable_answer(r.get("answer"))
        except BadRow:
            continue
        by[row_type(r)][normalize(answer)] += 1
        n += 1
    per = {t: c.most_common(1)[0][1] / sum(c.values()) for t, c in by.items()}
    overall = sum(c.most_common(1)[0][1] for c in by.values()) / max(1, n)
    return {"overall": overall, "per_type": per}


def evaluate(vlm, rows: list[dict], blind: bool = False, batch_size: int = 32, max_new_tokens: int = 32,
             progress: bool = True) -> dict:
    """Score `vlm` (a pipeline.VLM) on eval rows. Returns overall, per_type, n, and every prediction.

    The other answers of the same type compete (rule 5 of score.py): "person" is not credited to a
    reply that says "a person in a role or job" when that is another answer of the task."""
    skipped = Counter()
    usable = []
    for i, r in enumerate(rows):            # a row with no usable answer is skipped and counted, not scored
        try:
            usable.append((i, dict(r, answer=usable_answer(r.get("answer")))))
        except BadRow as e:
            skipped[e.kind] += 1
    others = defaultdict(set)
    for _, r in usable:
        others[row_type(r)].add(r["answer"])
    preds = []
    it = range(0, len(usable), batch_size)
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(usable), desc="eval (blind)" if blind else "eval", unit="row", leave=False)
    vcfg = vlm.model.cfg.vision
    for start in it:
        chunk, convs, imgs = [], [], []
        for i, r in usable[start:start + batch_size]:
            try:                       # one bad row (a picture that does not decode...) is skipped and counted
                conv, pics = _prompt_of(r)
            except (BadRow, ImageError) as e:
                skipped[e.kind] += 1
                continue
            chunk.append((i, r))
            convs.append(conv)
            imgs.append([blank_image(vcfg.image_size) for _ in pics] if blind else pics)
        replies = vlm.answer_batch(convs, imgs, max_new_tokens=max_new_tokens) if chunk else []
        for (i, r), reply in zip(chunk, replies):
            preds.append({"row": i, "type": row_type(r), "answer": r["answer"], "reply": reply,
                          "correct": is_correct(reply, r["answer"], others[row_type(r)])})
        if bar is not None:
            bar.update(len(chunk))
    if bar is not None:
        bar.close()
    per = defaultdict(list)
    for p in preds:
        per[p["type"]].append(p["correct"])
    return {"overall": sum(p["correct"] for p in preds) / max(1, len(preds)),
            "per_type": {t: sum(v) / len(v) for t, v in sorted(per.items())},
            "n": len(preds), "skipped": dict(skipped), "predictions": preds}


def _prompt_of(row: dict):
    """(conversation up to the last user turn, RGB pictures) of an eval row; raises BadRow / ImageError."""
    msgs = parse_conversations(row["conversations"])
    users = [i for i, m in enumerate(msgs) if m["role"] == "user"]
    if not users:
        raise BadRow("no_user", "no user turn to ask")
    conv = msgs[:users[-1] + 1]
    images = row_images(row)
    if count_markers(conv) not in (0, len(images)):          # no marker at all: the pipeline prepends them
        raise BadRow("marker_mismatch", f"{count_markers(conv)} <image> marker(s) but {len(images)} image(s)")
    pics = []
    for k, b in enumerate(images):
        try:
            pics.append(open_image(b))
        except ImageError as e:
            raise ImageError(e.kind, f"image {k}: {e}") from None
    return conv, pics


def format_table(result: dict, blind: dict | None = None, majority: dict | None = None) -> str:
    """A plain-text table: one line per type, then overall."""
    cols = ["accuracy"] + (["blind"] if blind else []) + (["majority"] if majority else [])
    types = list(result["per_type"])
    w = max([len(t) for t in types] + [8])
    lines = [f"{'type':<{w}}  " + "  ".join(f"{c:>9}" for c in cols)]
    for t in types + ["overall"]:
        vals = [result["per_type"][t] if t != "overall" else result["overall"]]
        if blind:
            vals.append(blind["per_type"].get(t, float("nan")) if t != "overall" else blind["overall"])
        if majority:
            vals.append(majority["per_type"].get(t, float("nan")) if t != "overall" else majority["overall"])
        lines.append(f"{t:<{w}}  " + "  ".join(f"{v * 100:8.1f}%" for v in vals))
    return "\n".join(lines)


def show_examples(rows: list[dict], predictions: list[dict], n: int, tagged: bool = False) -> None:
    """Print the first answer to each of up to `n` question types: question, reply, reference, verdict
    (`tagged` puts the type in front of the question)."""
    import json
    seen = set()
    for j, p in enumerate(predictions):
        row = rows[p.get("row", j)]
        if len(seen) >= n:
            break
        if p["type"] in seen:
            continue
        seen.add(p["type"])
        q = json.loads(row["conversations"])[0]["content"].replace("<image>\n", "")
        verdict = f"(reference: {p['answer']}, {'right' if p['correct'] else 'wrong'})"
        if tagged:
            print(f"  [{p['type']}] Q: {q}\n    A: {p['reply']}   {verdict}")
        else:
            print(f"  Q: {q}\n  A: {p['reply']}   {verdict}")
