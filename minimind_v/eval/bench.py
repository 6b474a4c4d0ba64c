"""The small-VLM benchmarks (MMStar, POPE, MME, ScienceQA-IMG, AI2D), read and scored as lmms-eval scores them.

    minimind-v eval --bench mmstar --model DIR --data mmstar.parquet [--limit K]

Each benchmark is one `Benchmark` row below: the columns its published parquet file has (what lmms-eval's task
definition reads), the prompt (lmms-eval's `doc_to_text` with the task's default pre/post prompt), the
generation arguments the task sends (max new tokens; every task stops at "\\n\\n", lmms-eval's default `until`),
the per-row answer extraction and the benchmark's own aggregate metric. The same wording, extraction and
arithmetic as lmms-eval 0.7 (facts about its task files, re-implemented here), so that `minimind-v eval --bench`
and `lmms-eval --model minimind_v` (eval/lmms_model.py, which generates through `generate_replies` below) give
the same score on the same rows; tests/test_bench.py checks both against each other and against hand-computed
values.

    mmstar         accuracy per L2 category; a category's score (and `average`) is the mean over its L2
                   categories (lmms-eval's macro average); the letter is found by `mcq_letter`
    pope           accuracy, precision, recall, F1 of "yes" (a reply counts only when it is exactly yes/no after
                   lower-casing) and yes_ratio (lmms-eval's: the share of reference answers that are "yes");
                   pred_yes_ratio (the POPE paper's: the share of replies that are "yes"); overall and per split
    mme            per category: acc (questions) + acc+ (pictures with both questions right), in %; perception
                   and cognition are the sums over their categories (at most 2000 and 800)
    scienceqa-img  exact match of the option letter ("B" or "B. ...")
    ai2d           exact match of the option letter (a reply "B. ..." is cut to "B"; case and punctuation
                   ignored)

Bad input never stops a run silently: a file without the columns a benchmark needs is one clear error naming
them; a row whose picture does not decode (or is missing) is skipped and counted by kind; an MME picture
without its pair of questions (e.g. cut by --limit) is skipped and counted as `mme_unpaired`.
"""
from __future__ import annotations

import re
import string
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..image import ImageError, open_image

UNTIL = ("\n\n",)      # lmms-eval's default stop sequence (its `fewshot_delimiter`) for every task here
DEFAULT_MAX_NEW_TOKENS = 128   # what minimind_v sends when a task names none (MMStar), in both routes
LETTER_PROMPT = "\nAnswer with the option's letter from the given choices directly."
SHORT_PROMPT = "\nAnswer the question using a single word or phrase."
YES_NO_SUFFIX = " Please answer yes or no."     # MMStar / MME drop it when they add their own post-prompt


class BenchError(ValueError):
    """A benchmark input that cannot be used at all (unknown name, missing columns): one line for the user."""


# ---------------------------------------------------------------- answer extraction (lmms-eval's rules)
# lmms-eval's tasks/_task_utils/mcq_extract.py, as rules: look for every choice letter in several forms, rank the
# forms, and within the best form take the occurrence nearest the end.
_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
            "best answer is", "the correct option is", "correct option is", "the best option is", "best option is",
            "the choice is", "choice is", "the correct choice is", "correct choice is", "i choose", "i select",
            "i pick", "my answer is", "my choice is", "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは")
_RANK = {"start": 10, "end": 9, "phrase": 7, "parentheses": 6, "period": 5, "colon": 4, "right_paren": 3,
         "space": 2, "fallback": 0}


def mcq_letter(reply: str, choices=("A", "B", "C", "D")) -> str:
    """The option letter a free-form reply gives ("" when none)."""
    if not reply or not reply.strip():
        return ""
    text = reply.strip()
    for ch in ",.!?;:'\"":                       # one mark after another, in this order (not as a set)
        text = text.strip(ch)
    text = f" {text} "
    found = []                                   # (letter, position, form)
    for form, pattern in (("parentheses", "({})"), ("period", "{}."), ("colon", "{}:"), ("right_paren", "{})"),
                          ("space", "{} ")):
        found += [(c, text.rfind(pattern.format(c)), form) for c in choices if pattern.format(c) in text]
    low = text.lower()
    for phrase in _PHRASES:                      # the first mention of each phrase, then each letter after it
        at = low.find(phrase)
        if at >= 0:
            found += [(c, text.find(c, at + len(phrase)), "phrase") for c in choices
                      if text.find(c, at + len(phrase)) >= 0]
    core = text.strip()
    found += [(c, 0, "start") for c in choices if core.startswith(c) and (len(core) == 1 or not core[1].isalpha())]
    found += [(c, len(text) - 1, "end") for c in choices
              if core.endswith(c) and (len(core) == 1 or not core[-2].isalpha())]
    if not found:
        found = [(c, text.rfind(c), "fallback") for c in choices if c in text]
    if not found:
        return ""
    return sorted(found, key=lambda f: (_RANK[f[2]], f[1]), reverse=True)[0][0]


def mme_label(reply: str) -> str:
    """"yes" / "no" / "other", read from the start of a reply (MME's rule, from Otter's evaluation)."""
    r = reply.lower().strip().replace(".", "")
    if r in ("yes", "no"):
        return r
    if len(r) == 1:
        return {"y": "yes", "n": "no"}.get(r, "other")
    head = r[:4]
    return "yes" if "yes" in head else "no" if "no" in head else "other"


def _letters(n: int) -> list[str]:
    return [chr(ord("A") + i) for i in range(n)]


def _options(choices) -> str:
    return "\n".join(f"{k}. {c}" for k, c in zip(_letters(len(choices)), choices))


# ---------------------------------------------------------------- prompts (lmms-eval's doc_to_text, defaults)
def mmstar_prompt(doc: dict) -> str:
    return doc["question"].strip().replace(YES_NO_SUFFIX, "") + LETTER_PROMPT.rstrip(".")


def pope_prompt(doc: dict) -> str:
    return doc["question"].strip() + SHORT_PROMPT


def mme_prompt(doc: dict) -> str:
    return doc["question"].strip().replace(YES_NO_SUFFIX, "") + SHORT_PROMPT


def sqa_prompt(doc: dict) -> str:
    hint = doc["hint"]
    context = f"Context: {hint}\n" if hint else hint
    return f"{context}{doc['question']}\n{_options(doc['choices'])}{LETTER_PROMPT}"


def ai2d_prompt(doc: dict) -> str:
    return f"{doc['question']}\n{_options(doc['options'])}{LETTER_PROMPT}"


# ---------------------------------------------------------------- per-row scores (lmms-eval's process_results)
def mmstar_row(doc: dict, reply: str) -> dict:
    ok = mcq_letter(reply.strip()) == doc["answer"].strip().upper()
    return {"score": float(ok), "category": doc["category"], "l2_category": doc["l2_category"]}


def pope_row(doc: dict, reply: str) -> dict:
    pred, gt = reply.strip().lower().strip(), doc["answer"].lower().strip()
    if gt not in ("yes", "no"):
        raise BadAnswer(f"POPE answer {doc['answer']!r} is not yes/no")
    return {"score": float(pred == gt), "prediction": pred, "ground_truth": gt,
            "split": str(doc.get("category") or "all")}


MME_PERCEPTION = ("existence", "count", "position", "color", "posters", "celebrity", "scene", "landmark", "artwork",
                  "OCR")


def mme_row(doc: dict, reply: str) -> dict:
    gt = doc["answer"].lower().strip().replace(".", "")
    if gt not in ("yes", "no"):
        raise BadAnswer(f"MME answer {doc['answer']!r} is not yes/no")
    return {"score": float(mme_label(reply.strip()) == gt), "category": doc["category"],
            "question_id": doc["question_id"]}


def sqa_target(doc: dict) -> str:
    return _letters(len(doc["choices"]))[int(doc["answer"])]


def sqa_row(doc: dict, reply: str) -> dict:
    target, pred = sqa_target(doc).strip().lower(), reply.strip()
    if pred.lower() == target:
        ok = True
    else:
        ok = len(pred) >= 2 and pred[0].isupper() and pred[1] == "." and pred[0].lower() == target
    return {"score": float(ok)}


_PUNCT = str.maketrans("", "", string.punctuation)


def ai2d_row(doc: dict, reply: str) -> dict:
    target = _letters(len(doc["options"]))[int(doc["answer"])]
    m = re.match(r"^\s*([A-Z])\.", reply)         # the task's filter: "B. ..." -> "B"; else the whole reply
    pred = (m.group(1) if m else reply).strip()
    return {"score": float(pred.lower().translate(_PUNCT) == target.lower().translate(_PUNCT))}


class BadAnswer(ValueError):
    """A row whose reference answer the benchmark cannot score (skipped and counted as `bad_answer`)."""


# ---------------------------------------------------------------- aggregates (lmms-eval's aggregation functions)
def _mean(xs) -> float:
    xs = list(xs)
    return sum(xs) / len(xs) if xs else 0.0


def mmstar_metrics(recs: list[dict]) -> dict:
    by_l2 = defaultdict(list)
    cat_of = {}
    for r in recs:
        by_l2[r["l2_category"]].append(r["score"])
        cat_of[r["l2_category"]] = r["category"]
    l2 = {k: _mean(v) for k, v in by_l2.items()}
    cats = defaultdict(list)
    for k, v in l2.items():
        cats[cat_of[k]].append(v)
    out = {c: _mean(v) for c, v in sorted(cats.items())}
    out["average"] = _mean(l2.values())
    out["per_l2_category"] = dict(sorted(l2.items()))
    return out


def _pope(recs: list[dict]) -> dict:
    tp = sum(r["ground_truth"] == "yes" and r["prediction"] == "yes" for r in recs)
    fp = sum(r["ground_truth"] == "no" and r["prediction"] == "yes" for r in recs)
    fn = sum(r["ground_truth"] == "yes" and r["prediction"] == "no" for r in recs)  # "other" is no negative
    precision = tp / (tp + fp) if tp + fp else 0.0
    recall = tp / (tp + fn) if tp + fn else 0.0
    return {"pope_accuracy": _mean(r["score"] for r in recs), "pope_precision": precision, "pope_recall": recall,
            "pope_f1_score": 2 * precision * recall / (precision + recall) if precision + recall else 0.0,
            "pope_yes_ratio": _mean(r["ground_truth"] == "yes" for r in recs),
            "pred_yes_ratio": _mean(r["prediction"] == "yes" for r in recs), "n": len(recs)}


def pope_metrics(recs: list[dict]) -> dict:
    out = _pope(recs)
    splits = defaultdict(list)
    for r in recs:
        splits[r["split"]].append(r)
    out["per_split"] = {s: _pope(v) for s, v in sorted(splits.items())}
    return out


def mme_metrics(recs: list[dict]) -> dict:
    pairs = defaultdict(lambda: defaultdict(list))       # category -> question_id (a picture) -> scores
    for r in recs:
        pairs[r["category"]][r["question_id"]].append(r["score"])
    per_cat, unpaired = {}, 0
    for cat, pics in sorted(pairs.items()):
        whole = {q: s for q, s in pics.items() if len(s) == 2}
        unpaired += sum(len(s) for q, s in pics.items() if len(s) != 2)
        if not whole:
            continue
        acc = _mean(sum(s) / 2 * 100.0 for s in whole.values())
        acc_plus = _mean((sum(s) == 2) * 100.0 for s in whole.values())
        per_cat[cat] = {"acc": acc, "acc_plus": acc_plus, "score": acc + acc_plus, "pictures": len(whole)}
    return {"mme_perception_score": sum(v["score"] for c, v in per_cat.items() if c in MME_PERCEPTION),
            "mme_cognition_score": sum(v["score"] for c, v in per_cat.items() if c not in MME_PERCEPTION),
            "per_category": per_cat, "unpaired": unpaired}


def exact_match_metrics(recs: list[dict]) -> dict:
    return {"exact_match": _mean(r["score"] for r in recs)}


# ---------------------------------------------------------------- the table of benchmarks
@dataclass(frozen=True)
class Benchmark:
    name: str                       # the name on our command line
    task: str                       # lmms-eval's task name
    split: str                      # the split lmms-eval reads
    columns: tuple                  # what the prompt, the picture and the scoring read
    prompt: Callable[[dict], str]
    score_row: Callable[[dict, str], dict]
    aggregate: Callable[[list[dict]], dict]
    max_new_tokens: int = DEFAULT_MAX_NEW_TOKENS
    headline: tuple = ()            # metric keys printed first
    image_optional: bool = False    # ScienceQA: a row without a picture is asked as text
    dataset: str = ""               # the published data set lmms-eval downloads
    config: str = ""                # its configuration's folder in that repo, when it has several


BENCHMARKS = {b.name: b for b in (
    Benchmark("mmstar", "mmstar", "val", ("index", "question", "image", "answer", "category", "l2_category"),
              mmstar_prompt, mmstar_row, mmstar_metrics, headline=("average",), dataset="Lin-Chen/MMStar"),
    Benchmark("pope", "pope", "test", ("question_id", "question", "image", "answer"),
              pope_prompt, pope_row, pope_metrics, max_new_tokens=128,
              headline=("pope_accuracy", "pope_precision", "pope_recall", "pope_f1_score", "pope_yes_ratio"),
              dataset="lmms-lab-encoder/POPE"),
    Benchmark("mme", "mme", "test", ("question_id", "question", "image", "answer", "category"),
              mme_prompt, mme_row, mme_metrics, max_new_tokens=16,
              headline=("mme_perception_score", "mme_cognition_score"), dataset="lmms-lab-encoder/MME"),
    Benchmark("scienceqa-img", "scienceqa_img", "test", ("question", "choices", "answer", "hint", "image"),
              sqa_prompt, sqa_row, exact_match_metrics, max_new_tokens=16, headline=("exact_match",),
              image_optional=True, dataset="lmms-lab-encoder/ScienceQA", config="ScienceQA-IMG"),
    Benchmark("ai2d", "ai2d", "test", ("question", "options", "answer", "image"),
              ai2d_prompt, ai2d_row, exact_match_metrics, max_new_tokens=16, headline=("exact_match",),
              dataset="lmms-lab-encoder/ai2d"),
)}


def get_benchmark(name: str) -> Benchmark:
    b = BENCHMARKS.get(name) or BENCHMARKS.get(name.replace("_", "-"))
    if b is None:
        raise BenchError(f"unknown benchmark {name!r} (known: {', '.join(BENCHMARKS)})")
    return b


# ---------------------------------------------------------------- reading the published files
def bench_files(bench: Benchmark, data) -> list[str]:
    """Parquet files of `data` (files, or folders searched for *.parquet; in a folder, the files of the
    benchmark's split when their names say so, e.g. data/test-00000-of-00004.parquet)."""
    files = []
    for d in ([data] if isinstance(data, (str, Path)) else data):
        p = Path(d)
        if p.is_dir():
            found = sorted(p.rglob("*.parquet"))
            if bench.config:                  # a repo with several configurations: the benchmark's one
                found = [f for f in found if bench.config in f.relative_to(p).parts] or found
            split = [f for f in found if re.search(rf"(^|[/_.-]){re.escape(bench.split)}([/_.-]|$)",
                                                   str(f.relative_to(p)))]
            files += [str(f) for f in (split or found)]
            if not found:
                raise BenchError(f"{p}: no .parquet file in this folder")
        elif p.exists():
            files.append(str(p))
        else:
            raise FileNotFoundError(f"{p}: no such file or folder")
    return files


def resolve_data(data: list[str]) -> list[str]:
    """Local paths as they are; Hub ids (owner/name:file.parquet) through hub.py (the command line's --data
    is resolved before it gets here; this is for `train --eval-bench-data`)."""
    from ..hub import resolve
    return [str(resolve(d, "dataset")) for d in data]


class BenchRows:
    """The rows of a benchmark's files, read lazily: one parquet row group in memory at a time (a published
    file holds thousands of pictures: POPE's 9000 rows are over a gigabyte of JPEG bytes)."""

    def __init__(self, parts):
        self.parts = parts                  # [(ParquetRows, rows taken from it)]

    def __len__(self) -> int:
        return sum(n for _, n in self.parts)

    def __getitem__(self, i: int) -> dict:
        for rows, n in self.parts:
            if i < n:
                return rows[i]
            i -= n
        raise IndexError(i)

    def __iter__(self):
        for rows, n in self.parts:
            for i in range(n):
                yield rows[i]


def load_bench_rows(bench: Benchmark, data, limit: int | None = None) -> BenchRows:
    """The first `limit` rows (all when None) of the benchmark's files, as dicts (pictures still encoded).
    Every file's columns are checked first."""
    from ..data.parquet import ParquetRows
    files = bench_files(bench, data)
    parts, total = [], 0
    for f in files:
        pr = ParquetRows(f)
        missing = [c for c in bench.columns if c not in pr.available]
        if missing:
            raise BenchError(f"{f}: the {bench.name} benchmark needs the column(s) {', '.join(missing)} "
                             f"(the file has: {', '.join(sorted(pr.available))})")
        n = len(pr) if limit is None else max(0, min(len(pr), limit - total))
        parts.append((pr, n))
        total += n
    return BenchRows([(pr, n) for pr, n in parts if n])


def row_picture(bench: Benchmark, doc: dict):
    """The row's picture as an RGB image (a list of one), or [] for ScienceQA's text-only rows.
    The published layout stores a picture as {"bytes": ..., "path": ...} (Hugging Face's Image feature);
    plain bytes are accepted too. Raises ImageError (kind `no_image`, `bad_image`...)."""
    cell = doc.get("image")
    if isinstance(cell, dict):
        cell = cell.get("bytes")
    if cell is None or (isinstance(cell, (bytes, bytearray)) and not cell):
        if bench.image_optional and doc.get("image") is None:
            return []
        raise ImageError("no_image", "the row has no picture bytes")
    return [open_image(cell)]


# ---------------------------------------------------------------- generation, shared by both routes
def cut_at(text: str, until) -> str:
    """The text before the first stop sequence (each `until` string cuts in turn, as lmms-eval's models do)."""
    for u in until or ():
        if u:
            text = text.split(u)[0]
    return text


def generate_replies(vlm, prompts: list[str], pictures: list[list], max_new_tokens: int,
                     until=UNTIL, temperature: float = 0.0, **sampling) -> list[str]:
    """One batched generation: each prompt is one user turn (pictures first, the chat template of the model),
    the reply is decoded and cut at the stop sequences. `sampling`: top_p / top_k / seed when temperature > 0."""
    convs = [[{"role": "user", "content": p}] for p in prompts]
    replies = vlm.answer_batch(convs, pictures, max_new_tokens=max_new_tokens, temperature=temperature, **sampling)
    return [cut_at(r, until) for r in replies]


def run_benchmark(vlm, bench: Benchmark, rows, batch_size: int = 8, progress: bool = True,
                  max_new_tokens: int | None = None) -> dict:
    """Ask every row, score it, aggregate. Returns {benchmark, task, n, skipped, metrics, predictions}.
    Rows are read, their pictures decoded and asked one batch at a time (memory stays one batch's)."""
    skipped = Counter()
    preds, recs = [], []
    bar = None
    if progress:
        from tqdm import tqdm
        bar = tqdm(total=len(rows), desc=f"eval {bench.name}", unit="row", leave=False)
    for s in range(0, len(rows), batch_size):
        chunk = []
        for i in range(s, min(len(rows), s + batch_size)):
            doc = rows[i]
            try:                     # a bad row (a picture that does not decode...) is skipped and counted
                chunk.append((i, doc, bench.prompt(doc), row_picture(bench, doc)))
            except ImageError as e:
                skipped[e.kind] += 1
            except (KeyError, TypeError, ValueError, IndexError, AttributeError):
                skipped["bad_row"] += 1
        replies = generate_replies(vlm, [c[2] for c in chunk], [c[3] for c in chunk],
                                   max_new_tokens or bench.max_new_tokens) if chunk else []
        for (i, doc, prompt, _), reply in zip(chunk, replies):
            try:
                rec = bench.score_row(doc, reply)
            except (BadAnswer, KeyError, TypeError, ValueError, IndexError):
                skipped["bad_answer"] += 1
                continue
            recs.append(rec)
            preds.append({"row": i, "prompt": prompt, "reply": reply, **rec})
        if bar is not None:
            bar.update(min(len(rows), s + batch_size) - s)
    if bar is not None:
        bar.close()
    metrics = bench.aggregate(recs)
    if metrics.get("unpaired"):                 # asked, but left out of MME's pairwise score
        skipped["mme_unpaired"] += metrics["unpaired"]
    return {"benchmark": bench.name, "task": bench.task, "n": len(recs) - metrics.get("unpaired", 0),
            "skipped": dict(skipped),
            "metrics": metrics, "predictions": preds}


def format_result(res: dict) -> str:
    """Plain lines: the headline metrics, then the breakdowns (per category / split)."""
    b = get_benchmark(res["benchmark"])
    m = res["metrics"]
    pct = not b.name.startswith("mme")           # MME's scores are sums of percentages already
    show = (lambda v: f"{v * 100:6.2f}%") if pct else (lambda v: f"{v:8.2f}")
    lines = [f"{b.name} (lmms-eval task {b.task}), n = {res['n']}"]
    lines += [f"  {k:<28} {show(m[k])}" for k in b.headline if k in m]
    if b.name == "mmstar":
        lines += [f"  {k:<28} {show(v)}" for k, v in m.items() if k not in ("average", "per_l2_category")]
    if b.name == "pope":
        for s, v in m["per_split"].items():
            lines.append(f"  [{s}] acc {v['pope_accuracy'] * 100:.2f}%  precision {v['pope_precision'] * 100:.2f}%  "
                         f"recall {v['pope_recall'] * 100:.2f}%  F1 {v['pope_f1_score'] * 100:.2f}%  "
                         f"yes-ratio {v['pope_yes_ratio'] * 100:.2f}% (replies {v['pred_yes_ratio'] * 100:.2f}%)"
                         f"  n = {v['n']}")
    if b.name == "mme":
        lines += [f"  [{c}] acc {v['acc']:.2f}  acc+ {v['acc_plus']:.2f}  score {v['score']:.2f}"
                  for c, v in m["per_category"].items()]
    return "\n".join(lines)


def score_during_training(model, tokenizer, cfg) -> dict:
    """The benchmark score of a model being trained (`train --eval-every N --eval-bench NAME --eval-limit K`):
    the first K rows of `cfg.eval_bench_data`, greedy, in eval mode; training mode is restored after.
    Returns {"bench/<name>/<metric>": value, ...} for the headline metrics."""
    from ..pipeline import VLM
    bench = get_benchmark(cfg.eval_bench)
    rows = load_bench_rows(bench, resolve_data([str(cfg.eval_bench_data)]), cfg.eval_limit or None)
    was_training = model.training
    model.eval()
    try:
        res = run_benchmark(VLM(model, tokenizer), bench, rows, batch_size=getattr(cfg, "eval_batch_size", 8) or 8,
                            progress=False)
    finally:
        model.train(was_training)
    out = {f"bench/{bench.name}/{k}": res["metrics"][k] for k in bench.headline if k in res["metrics"]}
    out[f"bench/{bench.name}/n"] = res["n"]
    return out


def bench_command(a) -> int:
    """`minimind-v eval --bench NAME --model DIR --data PATH... [--limit K] [--out FILE.json]`."""
    import json
    import sys

    from ..outputs import check_output, staged_output
    from ..pipeline import VLM
    if a.blind:
        raise BenchError("--blind is for the package's own eval files; it is not available with --bench")
    bench = get_benchmark(a.bench)
    if a.out:
        check_output(a.out, [a.model, *a.data], overwrite=True)
    rows = load_bench_rows(bench, a.data, a.limit)      # bad columns are refused before the model loads
    vlm = VLM.load(a.model, device=a.device)
    res = run_benchmark(vlm, bench, rows, batch_size=a.batch_size)
    if res["n"] == 0:
        raise BenchError(f"no row of {', '.join(a.data)} could be scored: " + ", ".join(
            f"{k}={v}" for k, v in sorted(res["skipped"].items())))
    print(format_result(res))
    if res["skipped"]:
        print("skipped rows (not scored): " + ", ".join(f"{k}={v}" for k, v in sorted(res["skipped"].items())),
              file=sys.stderr)
    if a.out:
        with staged_output(a.out, [a.model, *a.data], overwrite=True) as stage:
            stage.write_text(json.dumps(res, indent=2))
    return 0


def log_during_training(p, run) -> None:
    """The training loop's call every --eval-every steps: score on the main process (the others go on to their
    next step and wait for it there), write {"step", "bench/<name>/<metric>"...} to metrics.jsonl (and the
    tracker) beside the loss records, and print it."""
    if not p.dist.main:
        return
    import json
    rec = {"step": run.step, "epoch": run.epoch, **score_during_training(p.model, p.tok, p.cfg)}
    p.metrics.log(rec)
    line = json.dumps({k: round(v, 4) if isinstance(v, float) else v for k, v in rec.items()})
    (p.bar.write if p.bar is not None else p.log)(f"[bench] {line}" if p.bar is not None else line)
