"""CPU pace with a neighbour: `vlm-sft` step times before and after another program takes one core.

    python benchmarks/cpu_neighbour.py [--steps 12] [--warmup 3] [--out results.json]

Run it on a machine with at least two cores and nothing else running (it starts its own neighbour). It
draws the demo's data (48 px shapes, four-turn questions), trains the demo's model shape on them with the
project's own training loop (`vlm-sft`, 16 rows a step, packed, as the demo does), and runs three
configurations, each in a fresh process (OpenMP reads its settings once, when torch loads it):

  1_thread            OMP_NUM_THREADS=1, the project's defaults
  2_threads           OMP_NUM_THREADS=2, the project's defaults (cpu_pace.py: OMP_WAIT_POLICY=PASSIVE unless set)
  2_threads_spinning  OMP_NUM_THREADS=2, OMP_WAIT_POLICY=ACTIVE (what every run did before the default)

Each run first takes `--warmup` steps (not counted), then `--steps` quiet steps; then a CPU burner (a busy
loop pinned to the last core) starts, and after two steps of transition `--steps` more are timed; the
burner is stopped when the run ends. Step times come from the loop's own log lines (`step_time_s`, one
per step). One JSON line: the median quiet and neighbour step time of each run, and the ratios the
project aims at: with the neighbour, 2 threads at most 1.2x the 1-thread time; quiet, 2 threads (passive)
no slower than 2 threads spinning.
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

RUNS = {"1_thread": (1, None), "2_threads": (2, None), "2_threads_spinning": (2, "ACTIVE")}
BURNER = "import os, sys\nos.sched_setaffinity(0, {int(sys.argv[1])})\nwhile True:\n    pass\n"


def setup(work: Path) -> None:
    """Data, tokenizer and a (random) encoder folder, as the demo draws them (a separate process)."""
    from minimind_v.datatools import synth
    from minimind_v.model.vision import VisionEncoder
    from minimind_v.recipes.demo import DemoRecipe
    from minimind_v.tokenizer import train_tokenizer
    r = DemoRecipe()
    synth.generate(work / "data", 800, seed=0, image_size=r.image_size, kind="sft", turns=r.turns)
    train_tokenizer(synth.corpus(2000, 0), r.vocab_size, work / "tokenizer", show_progress=False)
    VisionEncoder(r.model_overrides()["vision"]).encoder.save_pretrained(str(work / "encoder"))


def child(work: Path, steps: int) -> None:
    """One training run whose loop prints a JSON log line per step (stdout)."""
    from minimind_v.cpu_pace import passive_openmp_default
    passive_openmp_default([])               # what `minimind-v` does first, before torch is imported
    from minimind_v.recipes.demo import DemoRecipe
    from minimind_v.train.loop import TrainConfig, train
    r = DemoRecipe()
    print(json.dumps({"omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
                      "omp_num_threads": os.environ.get("OMP_NUM_THREADS")}), flush=True)
    train(TrainConfig(stage="vlm-sft", data=[str(next((work / "data").glob("sft*.parquet")))],
                      out=str(work / f"run-{os.getpid()}"), tokenizer=str(work / "tokenizer"), preset="tiny",
                      model_overrides=r.model_overrides(), vision_encoder=str(work / "encoder"), trainable="all",
                      max_steps=steps, batch_size=r.batch_size, padding=r.padding, lr=r.sft_lr, log_every=1,
                      progress=False, plot=False, save_final=False))


def one_run(work: Path, threads: int, policy: str | None, warmup: int, steps: int, core: int) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1")
    env.pop("OMP_WAIT_POLICY", None)
    if policy is not None:
        env["OMP_WAIT_POLICY"] = policy
    total = warmup + steps + 2 + steps
    proc = subprocess.Popen([sys.executable, __file__, "--child", str(work), "--steps", str(total)], env=env,
                            stdout=subprocess.PIPE, text=True)
    times, burner, header, burner_at = [], None, {}, None
    try:
        for line in proc.stdout:
            start = line.find("{")               # the loop's lines read "[train] {...}"
            if start < 0:
                continue
            try:
                rec = json.loads(line[start:])
            except json.JSONDecodeError:
                continue
            if "omp_wait_policy" in rec:
                header = rec
                continue
            if "step_time_s" not in rec:
                continue
            times.append(rec["step_time_s"])
            if len(times) == warmup + steps and burner is None:
                burner = subprocess.Popen([sys.executable, "-c", BURNER, str(core)])
                burner_at = len(times)
        proc.wait()
    finally:
        if burner is not None:
            burner.kill()
            burner.wait()
        if proc.poll() is None:
            proc.kill()
    if proc.returncode != 0 or burner_at is None:
        raise SystemExit(f"the {threads}-thread run failed (exit {proc.returncode}, {len(times)} steps logged)")
    quiet = times[warmup:warmup + steps]
    busy = times[burner_at + 2:]
    return {"threads": threads, "omp_wait_policy": header.get("omp_wait_policy"),
            "quiet_step_s": round(statistics.median(quiet), 4), "neighbour_step_s": round(statistics.median(busy), 4),
            "quiet_steps": len(quiet), "neighbour_steps": len(busy)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=12, help="timed steps before and after the neighbour starts")
    ap.add_argument("--warmup", type=int, default=3, help="first steps not counted")
    ap.add_argument("--out", help="also write the JSON line to this file")
    ap.add_argument("--child", metavar="WORK", help=argparse.SUPPRESS)
    ap.add_argument("--setup", metavar="WORK", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    if a.setup:
        setup(Path(a.setup))
        return 0
    if a.child:
        child(Path(a.child), a.steps)
        return 0
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs at least two cores")
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cpu-neighbour-") as tmp:
        work = Path(tmp)
        subprocess.run([sys.executable, __file__, "--setup", str(work)], check=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"))
        runs = {name: one_run(work, threads, policy, a.warmup, a.steps, cores[-1])
                for name, (threads, policy) in RUNS.items()}
    one, two, spin = runs["1_thread"], runs["2_threads"], runs["2_threads_spinning"]
    result = {"benchmark": "cpu_neighbour", "cores": len(cores), "stage": "vlm-sft", "batch_size": 16,
              "padding": "pack", "runs": runs,
              "neighbour_ratio_2_vs_1": round(two["neighbour_step_s"] / one["neighbour_step_s"], 3),
              "neighbour_ratio_spinning_vs_1": round(spin["neighbour_step_s"] / one["neighbour_step_s"], 3),
              "quiet_ratio_2_vs_spinning": round(two["quiet_step_s"] / spin["quiet_step_s"], 3),
              "wall_s": round(time.time() - t0, 1)}
    result["aim_met"] = result["neighbour_ratio_2_vs_1"] <= 1.2 and result["quiet_ratio_2_vs_spinning"] <= 1.05
    line = json.dumps(result)
    print(line)
    if a.out:
        Path(a.out).write_text(line + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
