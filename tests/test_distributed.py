"""DDP on the CPU (gloo) through `torchrun`: 2 processes equal 1 process on the same global batch,
micro-steps skip the all-reduce (`no_sync`), only rank 0 writes, every rank reads its own shard, and a
run resumed with another number of processes (2 -> 1, 1 -> 2) continues at the right row.

The processes run a small wrapper around `minimind_v.cli` that counts DDP's all-reduce rounds with a
communication hook and turns on `trace_rows` (each rank records the rows of every optimizer step).
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from minimind_v.train.metrics import read_metrics
from minimind_v.train.sampler import StepSampler

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")
STEPS = 6

WRAPPER = textwrap.dedent("""
    # minimind-v CLI with (1) a DDP comm hook counting all-reduce rounds, (2) trace_rows switched on.
    import dataclasses, json, os, sys
    from torch.distributed.algorithms.ddp_comm_hooks import default_hooks
    from torch.nn.parallel import DistributedDataParallel as DDP
    from minimind_v.train import loop

    counts = {"rounds": 0, "buckets": 0}
    real_init = DDP.__init__
    def init(self, *a, **kw):
        real_init(self, *a, **kw)
        def hook(state, bucket):
            counts["buckets"] += 1
            counts["rounds"] += int(bucket.is_last())
            return default_hooks.allreduce_hook(state, bucket)
        self.register_comm_hook(None, hook)
    DDP.__init__ = init

    real_train = loop.train
    def train(cfg):
        summary = real_train(dataclasses.replace(cfg, trace_rows=True))
        with open(os.path.join(cfg.out, f"comm-rank{os.environ.get('RANK', '0')}.json"), "w") as f:
            json.dump(counts, f)
        return summary
    loop.train = train
    from minimind_v.cli import main
    sys.exit(main(sys.argv[1:]))
""")


def _launch(tmp: Path, nproc: int, out: Path, args: list[str]) -> str:
    """Run the wrapper under torchrun (nproc > 1) or plainly; returns rank 0's output (all of it for 1)."""
    script = tmp / "wrapper.py"
    script.write_text(WRAPPER)
    train_args = ["train", "--out", str(out), "--log-every", "1", "--no-progress", *args]
    if nproc == 1:
        p = subprocess.run([sys.executable, str(script), *train_args], env=ENV, capture_output=True, text=True,
                           timeout=600)
        assert p.returncode == 0, p.stdout + p.stderr
        return p.stdout
    logs = tmp / f"logs-{out.name}"
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           "--log-dir", str(logs), "--redirects", "3", str(script), *train_args]
    p = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    per_rank = {int(f.parent.name): f.read_text() for f in logs.rglob("stdout.log")}
    errs = "".join(f.read_text() for f in logs.rglob("stderr.log"))
    assert p.returncode == 0, p.stdout + p.stderr + errs
    assert sorted(per_rank) == list(range(nproc))
    for r in range(1, nproc):
        assert "[train]" not in per_rank[r], f"rank {r} logged:\n{per_rank[r]}"     # only rank 0 logs
    return per_rank[0]


def _trace(out: Path, rank: int = 0) -> dict[int, list[int]]:
    """step -> rows that rank trained on (the last record of a step wins, as after a resume)."""
    rows = {}
    for line in (out / f"rows-rank{rank}.jsonl").read_text().splitlines():
        r = json.loads(line)
        rows[r["step"]] = r["rows"]
    return rows


def _weights(out: Path) -> dict:
    return load_file(str(out / "model" / "model.safetensors"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory, synth_data, tiny_tokenizer):
    """Four runs of vlm-sft on 64 rows (each row used once at most: 6 steps x 8 rows = 48):

    two   2 processes, batch 2 x accum 2 (global batch 8), checkpoints every 2 steps
    one   1 process,   batch 2 x accum 4 (global batch 8): must equal `two`
    down  1 process,   batch 2 x accum 2, resumed from `two` at step 2 (global batch 8 -> 4), checkpoint every step
    up    2 processes, batch 2 x accum 2, resumed from `down` at step 3 (row 20, global batch 4 -> 8)
    """
    tmp = tmp_path_factory.mktemp("ddp")
    base = ["--stage", "vlm-sft", "--data", str(synth_data["sft"]), "--tokenizer", tiny_tokenizer.path,
            "--lr", "2e-3", "--seed", "11", "--max-steps", str(STEPS), "--batch-size", "2", "--max-length", "128",
            "--keep-last", "10"]
    r = {"tmp": tmp, "sft": synth_data["sft"]}
    r["two_log"] = _launch(tmp, 2, tmp / "two", [*base, "--grad-accum", "2", "--save-every", "2"])
    r["one_log"] = _launch(tmp, 1, tmp / "one", [*base, "--grad-accum", "4", "--save-every", "2"])
    r["down_log"] = _launch(tmp, 1, tmp / "down", [*base, "--grad-accum", "2", "--save-every", "1", "--resume",
                                                    str(tmp / "two" / "checkpoints" / "step-00000002")])
    r["up_log"] = _launch(tmp, 2, tmp / "up", [*base, "--grad-accum", "2", "--save-every", "2", "--resume",
                                                str(tmp / "down" / "checkpoints" / "step-00000003")])
    return r


@pytest.mark.slow
def test_two_processes_equal_one_with_the_same_global_batch(runs):
    tmp = runs["tmp"]
    two, one = _weights(tmp / "two"), _weights(tmp / "one")
    assert two.keys() == one.keys()
    worst = max((two[k] - one[k]).abs().max().item() for k in two)
    moved = max((two[k] - w).abs().max().item() for k, w in _weights(tmp / "down").items() if k in two)
    assert worst < 1e-5, f"2-process and 1-process weights differ by {worst}"
    assert moved > 1e-3                                 # a different run really differs: the check can fail
    # the same rows in the same steps
    t0, t1, single = _trace(tmp / "two", 0), _trace(tmp / "two", 1), _trace(tmp / "one", 0)
    for step in range(1, STEPS + 1):
        assert not set(t0[step]) & set(t1[step])        # every rank reads a different shard
        assert sorted(t0[step] + t1[step]) == sorted(single[step])


@pytest.mark.slow
def test_micro_steps_skip_the_all_reduce_and_only_rank_0_writes(runs):
    tmp = runs["tmp"]
    for rank in (0, 1):
        c = json.loads((tmp / "two" / f"comm-rank{rank}.json").read_text())
        assert c["rounds"] == STEPS, c                  # grad_accum 2: one all-reduce round per optimizer step
        assert c["buckets"] >= c["rounds"]
    assert json.loads((tmp / "one" / "comm-rank0.json").read_text())["rounds"] == 0
    recs = read_metrics(tmp / "two" / "metrics.jsonl")
    assert [r["step"] for r in recs] == list(range(1, STEPS + 1))      # one writer: each step once
    assert sorted(p.name for p in (tmp / "two" / "checkpoints").iterdir()) == \
        [f"step-{s:08d}" for s in (2, 4, 6)]
    assert (tmp / "two" / "model" / "model.safetensors").exists()


@pytest.mark.slow
def test_world_size_change_continues_at_the_right_row(runs):
    tmp = runs["tmp"]
    n = 64
    order = StepSampler(n, 1, seed=11).order(0)
    assert "world size 2 -> 1, global batch 8 -> 4 rows: continuing at row 16" in runs["down_log"]
    assert "world size 1 -> 2, global batch 4 -> 8 rows: continuing at row 20" in runs["up_log"]
    assert "reseeded" in runs["down_log"] and "reseeded" in runs["up_log"]
    two = [_trace(tmp / "two", r) for r in (0, 1)]
    down = _trace(tmp / "down", 0)
    up = [_trace(tmp / "up", r) for r in (0, 1)]
    seen = []
    for step in (1, 2):                                 # 2 processes, 8 rows per step
        seen += two[0][step] + two[1][step]
    seen += down[3]                                     # 1 process, 4 rows
    for step in range(4, STEPS + 1):                    # 2 processes again, 8 rows per step
        seen += up[0][step] + up[1][step]
    assert len(seen) == 16 + 4 + 3 * 8
    assert sorted(seen) == sorted(order[:len(seen)])    # no row repeated, none skipped
    assert sorted(down[4] + down[5] + down[6]) == sorted(order[20:32])
    st = json.loads((tmp / "up" / "checkpoints" / "step-00000006" / "state.json").read_text())
    assert st["world"] == 2 and st["consumed"] == 20 + 3 * 8 and len(st["rng"]) == 2


def test_epoch_runs_still_end_at_the_end_of_the_data_after_a_world_change():
    from minimind_v.train.config import TrainConfig
    from minimind_v.train.resume import resumed_total
    msgs = []
    # saved by 2 processes (global batch 8) after 5 steps of epoch 0; resumed by 1 process (global batch 4)
    state = {"global_batch": 8, "world": 2}
    one = StepSampler(100, 4, 1, world=1, rank=0)
    cfg = TrainConfig(stage="vlm-sft", data=[], out="x", epochs=2, batch_size=4)
    total = resumed_total(cfg, state, one, step=5, epoch=0, consumed=40, total=2 * 25, log=msgs.append)
    assert total == 5 + (100 - 40) // 4 + 25          # the rest of epoch 0, then all of epoch 1
    assert "world size 2 -> 1, global batch 8 -> 4 rows: continuing at row 40" in msgs[0]
    cfg.max_steps = 30
    assert resumed_total(cfg, state, one, 5, 0, 40, 30, msgs.append) == 30
    same = {"global_batch": 4, "world": 1}
    assert resumed_total(cfg, same, one, 5, 0, 40, 30, msgs.append) == 30 and len(msgs) == 2
