"""The small-VLM benchmarks (eval/bench.py) and the lmms-eval model (eval/lmms_model.py).

- the metric code against values worked out by hand, on a stub whose replies are fixed per question;
- the prompts and the answer extraction against lmms-eval's own task functions on the same rows;
- the real `lmms-eval` command line, offline, on local copies of all five benchmarks (--include_path with a task
  definition that includes the installed task's YAML and points it at a local parquet file, --limit), against
  `minimind-v eval --bench` on the same rows: the same prompts, the same replies, the same scores;
- bad input: missing columns, an unknown benchmark, pictures that do not decode: one line each, counted.
Nothing here reaches the network (HF_HUB_OFFLINE / HF_DATASETS_OFFLINE, a private HF_HOME).
"""
from __future__ import annotations

import glob
import importlib.util
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import bench_fixtures as bf
from minimind_v.eval import bench

HAVE_LMMS = importlib.util.find_spec("lmms_eval") is not None
needs_lmms = pytest.mark.skipif(not HAVE_LMMS, reason="lmms-eval is not installed (./run setup installs it)")
OFFLINE = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OMP_NUM_THREADS": "1",
           "HF_HUB_DISABLE_TELEMETRY": "1", "DO_NOT_TRACK": "1", "WANDB_MODE": "disabled"}


@pytest.fixture(autouse=True)
def _offline(monkeypatch, tmp_path):
    """Offline, a private HF_HOME, and the process left as it was found: importing lmms-eval turns on Pillow's
    LOAD_TRUNCATED_IMAGES (lmms_eval/api/task.py) and adds warning filters, which later test modules must not
    inherit (they check that a truncated picture is refused)."""
    import warnings

    import huggingface_hub.constants  # noqa: F401  (it reads HF_HUB_OFFLINE once, at import: not under ours)
    from PIL import Image, ImageFile
    saved = (ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, list(warnings.filters))
    for k, v in OFFLINE.items():
        monkeypatch.setenv(k, v)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    yield
    ImageFile.LOAD_TRUNCATED_IMAGES, Image.MAX_IMAGE_PIXELS, warnings.filters[:] = saved


class FixedReplies:
    """A stand-in for pipeline.VLM whose reply to each prompt is given in advance (it checks the pictures)."""

    def __init__(self, replies: dict):
        self.replies, self.seen = replies, []

    def answer_batch(self, convs, pictures, **kw):
        self.seen += [len(p) for p in pictures]
        return [self.replies[c[0]["content"]] for c in convs]


def run_fixed(name: str, path: Path, replies_by_row: list[str]) -> dict:
    b = bench.get_benchmark(name)
    rows = bench.load_bench_rows(b, [path])
    stub = FixedReplies({b.prompt(r): rep for r, rep in zip(rows, replies_by_row)})
    return bench.run_benchmark(stub, b, rows, batch_size=3, progress=False)


PNG = bf.picture("red", "circle")


# ---------------------------------------------------------------- the metrics, worked out by hand
def test_mmstar_macro_average_over_l2_categories(tmp_path):
    spec = [("math", "geometry", "A", "A"), ("math", "geometry", "B", "The answer is (C)."),
            ("math", "geometry", "C", "C. a cat"), ("math", "statistical reasoning", "D", "(D)"),
            ("coarse perception", "image emotion", "A", "B")]
    rows = [{"index": i, "question": f"Q{i}?\nOptions: A: a, B: b, C: c, D: d", "image": PNG, "answer": a,
             "category": c, "l2_category": l2} for i, (c, l2, a, _) in enumerate(spec)]
    res = run_fixed("mmstar", bf.write_rows(tmp_path / "m.parquet", rows), [s[3] for s in spec])
    m = res["metrics"]
    # geometry 2/3, statistical reasoning 1, image emotion 0: math = (2/3 + 1) / 2, average = (2/3 + 1 + 0) / 3
    assert m["math"] == pytest.approx(5 / 6)
    assert m["coarse perception"] == 0.0
    assert m["average"] == pytest.approx(5 / 9)          # not the 3/5 of pooled rows
    assert res["n"] == 5 and res["skipped"] == {}


def test_pope_precision_recall_f1_and_yes_ratios_per_split(tmp_path):
    gts = ["yes", "yes", "yes", "yes", "no", "no"]
    replies = ["Yes", "yes.", "no", " yes ", "yes", "no"]       # "yes." is neither yes nor no (exact match)
    rows = [{"question_id": str(i), "question": f"Is there a thing {i}?", "image": PNG, "answer": g,
             "category": "adversarial" if i < 3 else "random"} for i, g in enumerate(gts)]
    m = run_fixed("pope", bf.write_rows(tmp_path / "p.parquet", rows), replies)["metrics"]
    # scores 1 0 0 1 0 1; TP = 2 (rows 0, 3), FP = 1 (row 4), FN = 1 (row 2: "no" on a yes)
    assert m["pope_accuracy"] == pytest.approx(0.5)
    assert m["pope_precision"] == pytest.approx(2 / 3) and m["pope_recall"] == pytest.approx(2 / 3)
    assert m["pope_f1_score"] == pytest.approx(2 / 3)
    assert m["pope_yes_ratio"] == pytest.approx(4 / 6) and m["pred_yes_ratio"] == pytest.approx(3 / 6)
    adv, rnd = m["per_split"]["adversarial"], m["per_split"]["random"]
    assert (adv["pope_accuracy"], adv["pope_precision"], adv["pope_recall"]) == pytest.approx((1 / 3, 1.0, 0.5))
    assert (rnd["pope_accuracy"], rnd["pope_precision"], rnd["pope_recall"]) == pytest.approx((2 / 3, 0.5, 1.0))
    assert adv["pope_f1_score"] == pytest.approx(2 / 3) and rnd["pope_yes_ratio"] == pytest.approx(1 / 3)


def test_mme_acc_plus_acc_per_category_and_unpaired_rows(tmp_path):
    spec = [("color/1.png", "color", "Yes", "Yes"), ("color/1.png", "color", "No", "No"),
            ("color/2.png", "color", "Yes", "yes"), ("color/2.png", "color", "No", "yes"),
            ("code/1.png", "code_reasoning", "Yes", "No, it is not."), ("code/1.png", "code_reasoning", "No", "Nope"),
            ("color/3.png", "color", "Yes", "Yes")]                  # a picture with one question only
    rows = [{"question_id": q, "image": PNG, "question": f"Is it {i}? Please answer yes or no.", "answer": a,
             "category": c} for i, (q, c, a, _) in enumerate(spec)]
    res = run_fixed("mme", bf.write_rows(tmp_path / "e.parquet", rows), [s[3] for s in spec])
    m = res["metrics"]
    # color: acc = mean(100, 50) = 75, acc+ = mean(100, 0) = 50 -> 125; code_reasoning: 50 + 0
    assert m["per_category"]["color"] == {"acc": 75.0, "acc_plus": 50.0, "score": 125.0, "pictures": 2}
    assert m["mme_perception_score"] == pytest.approx(125.0)
    assert m["mme_cognition_score"] == pytest.approx(50.0)
    assert res["skipped"] == {"mme_unpaired": 1} and res["n"] == 6


def test_scienceqa_and_ai2d_letter_matching(tmp_path):
    sqa = [("B", 1), ("B. a cat", 1), ("b", 1), ("The answer is B", 1), ("C.", 1), ("A", 0)]
    rows = [{"image": PNG if i else None, "question": f"Which {i}?", "choices": ["x", "y", "z"], "answer": a,
             "hint": "" if i % 2 else "a hint"} for i, (_, a) in enumerate(sqa)]
    res = run_fixed("scienceqa-img", bf.write_rows(tmp_path / "s.parquet", rows), [r for r, _ in sqa])
    assert res["metrics"]["exact_match"] == pytest.approx(4 / 6) and res["n"] == 6   # row 0: no picture, asked as text
    ai = [("A. red", "0"), ("  B. blue", "1"), ("c", "2"), ("C)", "2"), ("The answer is D", "3"), ("D", "0")]
    rows = [{"question": f"What {i}?", "options": ["r", "b", "g", "y"], "answer": a, "image": PNG}
            for i, (_, a) in enumerate(ai)]
    res = run_fixed("ai2d", bf.write_rows(tmp_path / "a.parquet", rows), [r for r, _ in ai])
    assert res["metrics"]["exact_match"] == pytest.approx(4 / 6)


def test_mcq_letter_rules():
    cases = {"B": "B", "(C) because": "C", "The answer is D.": "D", "A. cat": "A", "I think it's B": "B",
             "": "", "none": "", "Apple": "A", "D, and also (B)": "D", ".,A": "A"}
    assert {k: bench.mcq_letter(k) for k in cases} == cases


# ---------------------------------------------------------------- the same rules as lmms-eval's task files
def _task_utils(rel: str):
    import lmms_eval.tasks
    path = Path(lmms_eval.tasks.__file__).parent / rel
    spec = importlib.util.spec_from_file_location(f"task_{path.parent.name}", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@needs_lmms
def test_prompts_and_extraction_equal_lmms_eval_task_functions(tmp_path):
    from lmms_eval.tasks._task_utils.mcq_extract import extract_mcq_answer
    replies = ["B", "(C) because", "The answer is D.", "A. cat", "I think it's B", "", " none ", "Apple", ".,A",
               "D, and also (B)", "my answer is c", "C:", "b)", "yes", "No.", "n", "Y", "nope", "yes, it is",
               "B. a cat", "  B. blue", "c", "C)", "答案是B", "A B C", "(A)(B)", "it is d."]
    assert [bench.mcq_letter(r) for r in replies] == [extract_mcq_answer(r, choices=list("ABCD")) for r in replies]
    mme = _task_utils("mme/utils.py")
    assert [bench.mme_label(r) for r in replies] == [mme.parse_pred_ans(r) for r in replies]
    kw = {"mmstar": ("mmstar/utils.py", "mmstar_doc_to_text", {"pre_prompt": "", "post_prompt":
                     "\nAnswer with the option's letter from the given choices directly"}),
          "pope": ("pope/utils.py", "pope_doc_to_text", {"pre_prompt": "", "post_prompt": bench.SHORT_PROMPT}),
          "mme": ("mme/utils.py", "mme_doc_to_text", {"pre_prompt": "", "post_prompt": bench.SHORT_PROMPT}),
          "scienceqa-img": ("scienceqa/utils.py", "sqa_doc_to_text", {"format": "default", "pre_prompt": "",
                            "post_prompt": bench.LETTER_PROMPT}),
          "ai2d": ("ai2d/utils.py", "ai2d_doc_to_text", {"prompt_format": "mcq", "pre_prompt": "",
                   "post_prompt": bench.LETTER_PROMPT})}
    for name, (rel, fn, kwargs) in kw.items():
        b = bench.get_benchmark(name)
        rows = bench.load_bench_rows(b, [bf.WRITERS[name](tmp_path / f"{name}.parquet", n=12)])
        theirs = getattr(_task_utils(rel), fn)
        assert [b.prompt(r) for r in rows] == [theirs(r, kwargs) for r in rows], name
    sqa = _task_utils("scienceqa/utils.py")
    rows = bench.load_bench_rows(bench.get_benchmark("scienceqa-img"), [bf.scienceqa(tmp_path / "s.parquet", n=6)])
    for r in rows:
        for rep in replies:
            assert bench.sqa_row(r, rep)["score"] == sqa.sqa_process_results(r, [rep.strip()])["exact_match"]


# ---------------------------------------------------------------- bad input
def test_unknown_benchmark_and_missing_columns_are_one_line(tmp_path, capsys):
    from minimind_v.cli import main
    with pytest.raises(bench.BenchError, match="unknown benchmark 'mmbench'"):
        bench.get_benchmark("mmbench")
    with pytest.raises(SystemExit) as e:
        main(["eval", "--bench", "mmbench", "--model", "x", "--data", "y"])
    assert e.value.code == 2 and "invalid choice: 'mmbench'" in capsys.readouterr().err
    p = bf.write_rows(tmp_path / "noanswer.parquet", [{"question": "q", "image": PNG, "category": "c"}])
    assert main(["eval", "--bench", "mme", "--model", str(tmp_path / "absent"), "--data", str(p)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: {p}: the mme benchmark needs the column(s) question_id, answer (the file has: category, "
                   f"image, question)"]


def test_cli_choices_are_the_benchmark_table():
    from minimind_v.cli import build_parser
    p = build_parser(["eval"])
    ev = p._subparsers._group_actions[0].choices["eval"]
    assert next(a for a in ev._actions if a.dest == "bench").choices == list(bench.BENCHMARKS)


def test_undecodable_pictures_are_skipped_and_counted(tmp_path, tiny_model_dir, capsys):
    from minimind_v.cli import main
    p = bf.pope(tmp_path / "pope.parquet", n=8, corrupt={1, 4})
    out = tmp_path / "r.json"
    assert main(["eval", "--bench", "pope", "--model", str(tiny_model_dir), "--data", str(p), "--out", str(out),
                 "--batch-size", "4"]) == 0
    res = json.loads(out.read_text())
    assert res["n"] == 6 and res["skipped"] == {"bad_image": 2}
    assert sorted(x["row"] for x in res["predictions"]) == [0, 2, 3, 5, 6, 7]
    assert "skipped rows (not scored): bad_image=2" in capsys.readouterr().err


def test_native_limit_and_folder_of_split_files(tmp_path, tiny_model_dir):
    from minimind_v.pipeline import VLM
    folder = tmp_path / "POPE" / "data"
    bf.pope(folder / "test-00000-of-00002.parquet", n=5, seed=1)
    bf.pope(folder / "test-00001-of-00002.parquet", n=5, seed=2)
    bf.pope(tmp_path / "POPE" / "other" / "train-00000.parquet", n=3)
    b = bench.get_benchmark("pope")
    assert len(bench.load_bench_rows(b, [tmp_path / "POPE"])) == 10           # the test split's files only
    sqa = tmp_path / "ScienceQA"                           # a repo with two configurations and three splits
    bf.scienceqa(sqa / "ScienceQA-IMG" / "test-00000-of-00001.parquet", n=4)
    bf.scienceqa(sqa / "ScienceQA-IMG" / "validation-00000-of-00001.parquet", n=3)
    bf.scienceqa(sqa / "ScienceQA-FULL" / "test-00000-of-00001.parquet", n=5)
    assert bench.bench_files(bench.get_benchmark("scienceqa-img"), sqa) == [
        str(sqa / "ScienceQA-IMG" / "test-00000-of-00001.parquet")]
    rows = bench.load_bench_rows(b, [tmp_path / "POPE"], limit=7)
    res = bench.run_benchmark(VLM.load(tiny_model_dir), b, rows, batch_size=3, progress=False)
    assert res["n"] == 7 and len(res["metrics"]["per_split"]) == 3


# ---------------------------------------------------------------- lmms-eval's command line against ours
def _devices():
    import torch
    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])     # CUDA too, on a machine that has one


@needs_lmms
@pytest.mark.slow
@pytest.mark.parametrize("device", _devices())
def test_lmms_eval_cli_and_native_agree_on_all_five(tmp_path, device):
    from minimind_v.pipeline import VLM
    model = bf.steered_model(tmp_path / "steered")
    limit = 16
    tasks, files = [], {}
    for name, write in bf.WRITERS.items():
        files[name] = write(tmp_path / "data" / f"{name}.parquet", n=20)
        tasks.append(bf.task_yaml(name, files[name], tmp_path / "tasks"))
    env = dict(os.environ, **OFFLINE, HF_HOME=str(tmp_path / "hf"))
    cmd = [str(Path(sys.executable).parent / "lmms-eval"), "--model", "minimind_v", "--model_args",
           f"pretrained={model},device={device}", "--tasks", ",".join(tasks), "--include_path", str(tmp_path / "tasks"),
           "--batch_size", "4", "--limit", str(limit), "--output_path", str(tmp_path / "out"), "--log_samples"]
    p = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
    results = json.loads(Path(glob.glob(str(tmp_path / "out" / "*" / "*_results.json"))[0]).read_text())["results"]
    vlm = VLM.load(model, device=device)
    scored = 0.0
    for name, task in zip(bf.WRITERS, tasks):
        b = bench.get_benchmark(name)
        ours = bench.run_benchmark(vlm, b, bench.load_bench_rows(b, [files[name]], limit), batch_size=5,
                                   progress=False)
        samples = [json.loads(line) for line in
                   open(glob.glob(str(tmp_path / "out" / "*" / f"*_samples_{task}.jsonl"))[0])]
        mine = {x["row"]: x for x in ours["predictions"]}
        assert len(samples) == limit == ours["n"]
        for s in samples:                                     # the same prompt and the same reply, row by row
            reply = mine[s["doc_id"]]["reply"]
            if name == "ai2d":                                # its task filter: "B. ..." -> "B"
                reply = re.sub(r"^\s*([A-Z])\..*", r"\1", reply, flags=re.S)
            assert (mine[s["doc_id"]]["prompt"], reply) == (s["input"], s["filtered_resps"])
        theirs = {k.split(",")[0]: v for k, v in results[task].items() if "stderr" not in k and k != "alias"}
        assert theirs == pytest.approx({k: ours["metrics"][k] for k in theirs}), name
        scored += sum(v for v in theirs.values() if isinstance(v, float))
    assert scored > 0                    # the steered model's replies score somewhere: not a comparison of zeros


# ---------------------------------------------------------------- a benchmark score during training
def test_train_logs_a_benchmark_score_beside_the_loss(tmp_path, synth_data):
    from minimind_v.pipeline import VLM
    from minimind_v.train.loop import TrainConfig, train
    from minimind_v.train.metrics import read_metrics
    pope = bf.pope(tmp_path / "pope.parquet", n=10)
    start = bf.steered_model(tmp_path / "steered", seed=6)   # replies yes or no here: scores that are not 0
    cfg = TrainConfig(stage="vlm-sft", data=[str(synth_data["sft"])], out=str(tmp_path / "run"), batch_size=4,
                      init_from=str(start), max_steps=4, device="cpu", log_every=2, progress=False, plot=False,
                      eval_every=2, eval_bench="pope", eval_limit=6, eval_bench_data=str(pope))
    summary = train(cfg)
    recs = read_metrics(tmp_path / "run" / "metrics.jsonl")
    scores = [r for r in recs if "bench/pope/pope_accuracy" in r]
    assert [r["step"] for r in scores] == [2, 4] and all(r["bench/pope/n"] == 6 for r in scores)
    assert [r["step"] for r in recs if "loss" in r] == [2, 4]
    # the last score is the saved model's, scored by `eval --bench` on the same rows
    b = bench.get_benchmark("pope")
    final = bench.run_benchmark(VLM.load(summary["model"]), b, bench.load_bench_rows(b, [pope], 6), progress=False)
    assert scores[-1]["bench/pope/pope_accuracy"] == final["metrics"]["pope_accuracy"]
    assert scores[-1]["bench/pope/pope_yes_ratio"] == final["metrics"]["pope_yes_ratio"]
    assert 0 < final["metrics"]["pope_accuracy"] < 1, final["predictions"]


def test_train_eval_every_needs_a_benchmark_and_its_data(capsys):
    from minimind_v.cli import main
    assert main(["train", "--stage", "vlm-sft", "--data", "x.parquet", "--out", "o", "--eval-every", "5",
                 "--eval-bench", "mmstar"]) == 2
    assert capsys.readouterr().err.strip().splitlines() == [
        "error: --eval-every needs --eval-bench NAME and --eval-bench-data PATH (the benchmark's parquet file)"]


# ---------------------------------------------------------------- the lmms-eval model class itself
@needs_lmms
def test_lmms_model_registered_batched_several_pictures_any_folder(tmp_path):
    from types import SimpleNamespace

    from lmms_eval.models import get_model

    from minimind_v.config import torch_dtype
    from minimind_v.formats.convert_export import export
    from minimind_v.image import open_image
    from minimind_v.pipeline import VLM
    cls = get_model("minimind_v")                          # found through the entry point, no edit to lmms-eval
    assert cls.__name__ == "MiniMindV" and cls.is_simple
    model = bf.steered_model(tmp_path / "steered")
    pics = [open_image(bf.picture(c, s)) for c in bf.COLOURS for s in bf.SHAPES]
    docs = [{"pics": pics[i % 8:i % 8 + i % 3]} for i in range(7)]       # 0, 1 or 2 pictures per request
    greedy = {"until": ["\n\n"], "max_new_tokens": 6, "do_sample": False, "temperature": 0}
    short = {"until": ["es"], "max_new_tokens": 2}
    reqs = [SimpleNamespace(args=(f"Question {i}?", dict(short if i % 4 == 3 else greedy), lambda d: d["pics"], i,
                                  "t", "test")) for i in range(7)]
    vlm = VLM.load(model)

    def one_by_one(i):
        g = short if i % 4 == 3 else greedy
        reply = vlm.answer_batch([[{"role": "user", "content": f"Question {i}?"}]], [docs[i]["pics"]],
                                 max_new_tokens=g["max_new_tokens"])[0]
        return bench.cut_at(reply, g["until"])
    expected = [one_by_one(i) for i in range(7)]
    assert any(expected)
    hf = tmp_path / "hf"
    export(str(model), str(hf), "hf", torch_dtype("fp32"))
    for folder in (model, hf):                             # our folder, and the transformers folder exported from it
        lm = cls.create_from_arg_string(f"pretrained={folder}", {"batch_size": "3", "device": "cpu"})
        lm.task_dict = {"t": {"test": docs}}
        assert lm.generate_until(reqs) == expected, folder
    # loglikelihood: the continuation's summed log-probability is the one the training loss gives, and the
    # greedy reply (not another answer) is reported as greedy
    import torch
    k = next(i for i in range(7) if i % 4 != 3 and expected[i] in ("yes", "no", "A", "B", "C", "D"))
    conts = [expected[k], "A" if expected[k] != "A" else "B"]
    got = lm.loglikelihood([SimpleNamespace(args=(f"Question {k}?", c, lambda d: d["pics"], k, "t", "test"))
                            for c in conts])
    assert [g[1] for g in got] == [True, False]
    with pytest.raises(ValueError, match="unknown model_args temprature"):
        cls.create_from_arg_string(f"pretrained={model},temprature=0", {"batch_size": "auto", "device": "cpu"})
    prompt = vlm.prompt_ids([{"role": "user", "content": f"Question {k}?"}], len(docs[k]["pics"]))
    for c, (logp, _) in zip(conts, got):
        want = vlm.tok.encode(c)
        with torch.no_grad():
            o = vlm.model(torch.tensor([prompt + want]), labels=torch.tensor([[-100] * len(prompt) + want]),
                          visual_tokens=vlm.visual_tokens(docs[k]["pics"]))
        assert logp == pytest.approx(-float(o.loss) * len(want), rel=1e-4, abs=1e-4)
    assert got[0][0] > got[1][0]


# ---------------------------------------------------------------- Hub ids for the model and the data
@pytest.fixture()
def fake_hub(monkeypatch):
    """The stand-in Hub of tests/hub_server.py on 127.0.0.1 (as in test_hub.py), nothing else reachable."""
    import socket

    from hub_server import FakeHub
    for var in ("HF_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE", "HUGGING_FACE_HUB_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    real_connect = socket.socket.connect

    def local_only(sock, address):
        if sock.family in (socket.AF_INET, socket.AF_INET6) and address[0] not in ("127.0.0.1", "::1"):
            raise ConnectionRefusedError(f"tests stay on 127.0.0.1, not {address[0]}")
        return real_connect(sock, address)
    monkeypatch.setattr(socket.socket, "connect", local_only)
    with FakeHub() as server:
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        from huggingface_hub import constants
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)    # read at import, under this module's offline env
        # file URLs come from a template built at import (with huggingface.co when an earlier test imported it)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")
        yield server


def test_model_and_data_by_hub_id(fake_hub, tmp_path, capsys):
    from minimind_v.cli import main
    model = bf.steered_model(tmp_path / "steered")
    data = bf.ai2d(tmp_path / "ai2d.parquet", n=6)
    fake_hub.add("tester/steered-vlm", {p.name: p.read_bytes() for p in model.iterdir()})
    fake_hub.add("tester/ai2d", {"data/test-00000-of-00001.parquet": data.read_bytes()}, repo_type="dataset")
    assert main(["eval", "--bench", "ai2d", "--model", str(model), "--data", str(data), "--out",
                 str(tmp_path / "local.json")]) == 0
    assert main(["eval", "--bench", "ai2d", "--model", "tester/steered-vlm", "--data",
                 "datasets/tester/ai2d:data/test-00000-of-00001.parquet", "--out", str(tmp_path / "hub.json")]) == 0
    local, hub = (json.loads((tmp_path / f).read_text()) for f in ("local.json", "hub.json"))
    assert hub["predictions"] == local["predictions"] and hub["n"] == 6
    if HAVE_LMMS:                                          # the lmms-eval model takes the same id
        import torch

        from minimind_v.eval.lmms_model import MiniMindV
        from minimind_v.pipeline import VLM
        got = MiniMindV(pretrained="tester/steered-vlm", device="cpu").vlm.model.state_dict()
        want = VLM.load(model).model.state_dict()
        assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)


@needs_lmms
def test_lmms_model_takes_a_lora_adapter_folder(tmp_path, synth_data):
    from types import SimpleNamespace

    from minimind_v.eval.lmms_model import MiniMindV
    from minimind_v.pipeline import VLM
    from minimind_v.train.loop import TrainConfig, train
    base = bf.steered_model(tmp_path / "steered")
    adapter = Path(train(TrainConfig(stage="vlm-sft", data=[str(synth_data["sft"])], out=str(tmp_path / "lora"),
                                     init_from=str(base), batch_size=4, lr=1e-2, max_steps=2, lora_rank=4,
                                     progress=False, plot=False, device="cpu"))["model"])
    assert (adapter / "adapter_config.json").exists()
    b = bench.get_benchmark("pope")
    rows = list(bench.load_bench_rows(b, [bf.pope(tmp_path / "pope.parquet", n=5)]))
    reqs = [SimpleNamespace(args=(b.prompt(r), {"until": ["\n\n"], "max_new_tokens": 8}, lambda d: [
        bench.row_picture(b, d)[0]], i, "pope", "test")) for i, r in enumerate(rows)]
    lm = MiniMindV(pretrained=str(adapter), device="cpu", batch_size=2)
    lm.task_dict = {"pope": {"test": rows}}
    vlm = VLM.load(adapter)                                # the adapter merged onto its base, as chat loads it
    assert lm.generate_until(reqs) == bench.generate_replies(
        vlm, [b.prompt(r) for r in rows], [bench.row_picture(b, r) for r in rows], 8)
