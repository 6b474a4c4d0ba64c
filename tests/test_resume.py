"""Never lose a run: resumed runs end bitwise equal to uninterrupted ones, checkpoints are atomic and a
corrupt one is detected and skipped.

The slow tests kill a real `python -m minimind_v.cli train ...` process with SIGKILL (twice, at steps
drawn at random) or SIGTERM, continue it with `--resume auto` (the same command line), and compare the
final weights byte for byte with a run that was never interrupted: for vlm-sft (grad_accum 2, two
DataLoader workers, across an epoch boundary), vlm-pretrain and llm-sft from JSONL (grad_accum 3).
"""
from __future__ import annotations

import json
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from minimind_v.train import checkpoint as ckpt
from minimind_v.train.loop import TrainConfig, train
from minimind_v.train.metrics import read_metrics
from minimind_v.train.sampler import SeededRows, StepSampler

ENV = dict(os.environ, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONUNBUFFERED="1")


# ---------------------------------------------------------------- helpers
def _jsonl_sft(path: Path, n: int = 48) -> Path:
    from minimind_v.datatools import synth
    texts = synth.corpus(n, 3)
    rows = [{"conversations": [{"role": "user", "content": q}, {"role": "assistant", "content": a}]}
            for q, a in zip(texts[1::2], texts[2::2])][:n]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def _same_weights(a: Path, b: Path) -> None:
    """Every tensor of the two final model folders is bitwise equal (the files' metadata order may differ)."""
    wa, wb = load_file(str(a / "model" / "model.safetensors")), load_file(str(b / "model" / "model.safetensors"))
    assert wa.keys() == wb.keys()
    diff = [k for k in wa if not torch.equal(wa[k].view(torch.uint8), wb[k].view(torch.uint8))]
    assert not diff, f"weights differ after resume: {diff[:5]}"


def _cli(out: Path, args: list[str]) -> list[str]:
    return [sys.executable, "-m", "minimind_v.cli", "train", "--out", str(out), "--resume", "auto",
            "--log-every", "1", "--no-progress", *args]


def _run_until(cmd: list[str], stop_after: int | None, sig=signal.SIGKILL) -> tuple[int, str]:
    """Run `cmd`; once it has logged optimizer step `stop_after`, send `sig` to its whole process group
    (trainer and DataLoader workers, as when a machine is lost or a scheduler stops the job).
    Returns (returncode, log)."""
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=ENV,
                         start_new_session=True)
    lines = []
    sent = False
    for line in p.stdout:
        lines.append(line)
        if stop_after is not None and not sent and line.startswith('[train] {"step": '):
            if json.loads(line[len("[train] "):])["step"] >= stop_after:
                os.killpg(p.pid, sig)
                sent = True
    rc = p.wait(timeout=300)
    return rc, "".join(lines)


def _resumed_step(log: str) -> int:
    """The step a run continued from (0 when it found no checkpoint and started afresh)."""
    for line in log.splitlines():
        if "resumed from" in line:
            return int(line.split(" at step ")[1].split()[0])
    assert "starting the run" in log, log
    return 0


def _last_logged_step(log: str) -> int:
    return max(json.loads(line[len("[train] "):])["step"] for line in log.splitlines()
               if line.startswith('[train] {"step": '))


CONFIGS = {
    # name: (stage, data key, extra CLI flags, steps)
    "vlm-sft": ("vlm-sft", "sft", ["--batch-size", "4", "--grad-accum", "2", "--num-workers", "2",
                                   "--max-length", "128"], 10),          # 64 rows / 8 per step: epoch 2 at step 9
    "vlm-pretrain": ("vlm-pretrain", "pretrain", ["--batch-size", "4", "--max-length", "96"], 8),
    "llm-sft": ("llm-sft", "jsonl", ["--batch-size", "2", "--grad-accum", "3", "--max-length", "64"], 10),
}


@pytest.fixture(scope="module")
def data(tmp_path_factory, synth_data, tiny_tokenizer):
    d = dict(synth_data)
    d["jsonl"] = _jsonl_sft(tmp_path_factory.mktemp("jsonl") / "sft.jsonl")
    d["tok"] = tiny_tokenizer.path
    return d


@pytest.fixture(scope="module")
def baseline(tmp_path_factory, data):
    """baseline(name) starts the uninterrupted run of a config (once per module, beside the interrupted
    runs); baseline.wait(name) waits for it and returns its run folder."""
    root, procs = tmp_path_factory.mktemp("baselines"), {}

    def start(name):
        if name not in procs:
            procs[name] = subprocess.Popen(_cli(root / name, _args(name, data)[0]), stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True, env=ENV)
        return root / name

    def wait(name):
        p = procs[name]
        if p.stdout is not None and not p.stdout.closed:
            out, _ = p.communicate(timeout=300)
            assert p.returncode == 0, out
        assert p.returncode == 0
        return root / name
    start.wait = wait
    yield start
    for p in procs.values():
        if p.poll() is None:
            p.kill()
            p.wait()


def _args(name: str, data) -> tuple[list[str], int]:
    stage, key, extra, steps = CONFIGS[name]
    return ["--stage", stage, "--data", str(data[key]), "--tokenizer", str(data["tok"]), "--lr", "2e-3",
            "--seed", "7", "--max-steps", str(steps), "--save-every", "2", "--keep-last", "2", *extra], steps


# ---------------------------------------------------------------- killed for real (slow)
@pytest.mark.slow
@pytest.mark.parametrize("name,second_signal", [("vlm-sft", signal.SIGKILL), ("vlm-pretrain", signal.SIGTERM),
                                                ("llm-sft", signal.SIGKILL)])
def test_killed_twice_then_resumed_equals_uninterrupted(tmp_path, data, baseline, name, second_signal):
    args, steps = _args(name, data)
    rng = random.Random(name)
    first = rng.randint(2, steps // 2 - 1)
    second = rng.randint(first + 2, steps - 2)
    print(f"{name}: SIGKILL after step {first}, {second_signal.name} after step {second}")
    baseline(name)                                                   # runs beside the interrupted one
    run = tmp_path / "run"
    rc, log1 = _run_until(_cli(run, args), first)
    assert rc == -signal.SIGKILL, log1
    assert "no checkpoint" in log1 and "starting the run" in log1
    rc, log2 = _run_until(_cli(run, args), second, second_signal)
    r2 = _resumed_step(log2)
    assert r2 % 2 == 0 and r2 <= _last_logged_step(log1), log2        # the newest checkpoint before the kill
    if second_signal == signal.SIGTERM:
        # it saved before exiting (exit code 0, or 143 = 128 + SIGTERM if the CLI reports the interruption)
        assert rc in (0, 128 + signal.SIGTERM) and "stop signal received" in log2, log2
        assert ckpt.step_of(ckpt.latest_valid(run)) == _last_logged_step(log2) >= second
    else:
        assert rc == -signal.SIGKILL, log2
    rc, log3 = _run_until(_cli(run, args), None)
    assert rc == 0, log3
    assert r2 < _resumed_step(log3) <= _last_logged_step(log2)
    _same_weights(run, baseline.wait(name))
    # the metrics log holds each step once, as if the run had never stopped
    steps_logged = [r["step"] for r in read_metrics(run / "metrics.jsonl")]
    assert steps_logged == list(range(1, steps + 1))


DYING_SAVE = textwrap.dedent("""
    # Kill this training process with SIGKILL in the middle of its N-th checkpoint save (half of optim.pt written).
    import os, signal, sys, torch
    die_at, calls, real_save = int(os.environ["DIE_AT_SAVE"]), [0], torch.save
    def dying_save(obj, f, *a, **kw):
        calls[0] += 1
        real_save(obj, f, *a, **kw)
        if calls[0] == die_at:
            size = os.path.getsize(f)
            os.truncate(f, size // 2)
            os.kill(os.getpid(), signal.SIGKILL)
    torch.save = dying_save
    from minimind_v.cli import main
    sys.exit(main(sys.argv[1:]))
""")


@pytest.mark.slow
def test_kill_during_a_save_keeps_the_previous_checkpoint(tmp_path, data, baseline):
    args, steps = _args("vlm-pretrain", data)
    baseline("vlm-pretrain")                                         # shared with the test above
    script = tmp_path / "dying.py"
    script.write_text(DYING_SAVE)
    run = tmp_path / "run"
    cmd = _cli(run, args)
    cmd[1:3] = [str(script)]                       # same arguments, through the wrapper
    p = subprocess.run(cmd, env=dict(ENV, DIE_AT_SAVE="2"), capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stdout + p.stderr
    leftovers = [d.name for d in (run / "checkpoints").iterdir()]
    assert "step-00000002" in leftovers and any(".tmp-" in n for n in leftovers), leftovers
    assert ckpt.latest_valid(run) == run / "checkpoints" / "step-00000002"
    rc, log = _run_until(_cli(run, args), None)
    assert rc == 0 and _resumed_step(log) == 2, log
    assert not any(".tmp-" in d.name for d in (run / "checkpoints").iterdir())
    _same_weights(run, baseline.wait("vlm-pretrain"))


# ---------------------------------------------------------------- in-process (fast)
def _cfg(out: Path, data, **kw) -> TrainConfig:
    base = dict(stage="vlm-sft", data=[str(data["sft"])], out=str(out), tokenizer=str(data["tok"]), batch_size=4,
                grad_accum=2, max_length=128, lr=2e-3, seed=3, max_steps=6, save_every=2, keep_last=3,
                progress=False, plot=False, log_every=1)
    base.update(kw)
    return TrainConfig(**base)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory, data):
    out = tmp_path_factory.mktemp("full") / "run"
    train(_cfg(out, data))
    return out


def test_resume_from_a_checkpoint_matches_the_uninterrupted_run(tmp_path, data, full_run, capsys):
    ck = full_run / "checkpoints" / "step-00000002"
    train(_cfg(tmp_path / "r", data, resume=str(ck)))
    assert "resumed from" in capsys.readouterr().out
    _same_weights(tmp_path / "r", full_run)


def test_corrupt_checkpoints_are_skipped_by_resume_auto(tmp_path, data, full_run, capsys):
    run = tmp_path / "r"
    shutil.copytree(full_run / "checkpoints", run / "checkpoints")
    cks = ckpt.list_checkpoints(run)
    assert [ckpt.step_of(c) for c in cks] == [2, 4, 6]
    newest, middle = cks[2], cks[1]
    f = newest / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size - 100])                # truncated copy
    o = middle / "optim.pt"
    raw = bytearray(o.read_bytes())
    raw[len(raw) // 2] ^= 0xFF                                             # one flipped byte, same size
    o.write_bytes(bytes(raw))
    assert "checksum" in ckpt.verify(newest) and "checksum" in ckpt.verify(middle)
    train(_cfg(run, data, resume="auto"))
    log = capsys.readouterr().out
    assert f"skipping checkpoint {newest}" in log and f"skipping checkpoint {middle}" in log
    assert _resumed_step(log) == 2
    assert (run / "checkpoints" / "abandoned" / "step-00000006").exists()     # set aside, never picked again
    _same_weights(run, full_run)


def test_resume_auto_without_checkpoint_starts_and_bad_paths_fail(tmp_path, data):
    with pytest.raises(FileNotFoundError, match="no such checkpoint"):
        train(_cfg(tmp_path / "x", data, resume=str(tmp_path / "nowhere")))
    s = train(_cfg(tmp_path / "fresh", data, resume="auto", max_steps=2, save_every=0))
    assert s["steps"] == 2


def test_checkpoint_holds_everything_to_continue(full_run):
    ck = ckpt.latest_valid(full_run)
    st = json.loads((ck / "state.json").read_text())
    for key in ("step", "epoch", "consumed", "world", "global_batch", "total_steps", "skipped", "bad_steps",
                "bad_in_row", "loader_seed", "config", "files"):
        assert key in st, key
    assert st["step"] == 6 and st["consumed"] == 6 * 8 and st["epoch"] == 0     # global batch 4 x 2 rows
    assert set(st["rng"][0]) >= {"python", "numpy", "torch"}
    assert st["config"]["seed"] == 3 and st["world"] == 1
    opt = torch.load(ck / "optim.pt", weights_only=True)
    assert opt["optimizer"]["state"] and opt["scaler"] is None


def test_save_keeps_last_k_and_replaces_atomically(tmp_path, tiny_model):
    opt = torch.optim.AdamW(tiny_model.parameters())
    for step in (1, 2, 3, 4):
        ckpt.save_checkpoint(tmp_path, step, tiny_model, opt, None, {"epoch": 0}, keep_last=2)
    assert [ckpt.step_of(c) for c in ckpt.list_checkpoints(tmp_path)] == [3, 4]
    (tmp_path / "checkpoints" / "step-00000005.tmp-99999").mkdir()              # left by a killed save
    ckpt.save_checkpoint(tmp_path, 4, tiny_model, opt, None, {"epoch": 0}, keep_last=2)   # same step again
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    assert names == ["step-00000003", "step-00000004"]
    assert ckpt.verify(tmp_path / "checkpoints" / "step-00000004") is None
    (tmp_path / "checkpoints" / "step-00000004" / "state.json").write_text('{"step": 4')
    assert "state.json" in ckpt.verify(tmp_path / "checkpoints" / "step-00000004")
    assert ckpt.latest_valid(tmp_path, warn=lambda m: None).name == "step-00000003"


# ---------------------------------------------------------------- data order and worker seeds
def _epoch_rows(n, bs, accum, world, seed, start=0, epoch=0):
    """Rows each optimizer step reads, all ranks together, from row `start` of the epoch."""
    samplers = [StepSampler(n, bs, accum, world, r, seed, epoch=epoch, start=start) for r in range(world)]
    per_rank = [list(s) for s in samplers]
    steps = []
    for k in range(len(per_rank[0]) // accum):
        rows = []
        for m in range(accum):
            for r in range(world):
                rows += per_rank[r][k * accum + m]
        steps.append(rows)
    return steps


def test_sampler_position_is_independent_of_world_size():
    n, seed = 50, 1
    order = StepSampler(n, 1, seed=seed).order(0)
    one = _epoch_rows(n, 4, 2, 1, seed)
    two = _epoch_rows(n, 4, 1, 2, seed)
    assert one == two                             # 2 ranks x 1 micro-step = 1 rank x 2 micro-steps
    assert sum(one, []) == order[:48]             # the incomplete last global batch (2 rows) is dropped
    # 2 -> 1: after 3 steps of 8 rows with 2 ranks, one rank continues at row 24
    before = sum(_epoch_rows(n, 4, 1, 2, seed)[:3], [])
    after = sum(_epoch_rows(n, 4, 1, 1, seed, start=24), [])
    assert before + after == order[:48] and len(set(before + after)) == 48
    # 1 -> 2: after 3 steps of 4 rows (row 12, not a multiple of the new global batch 8)
    before = sum(_epoch_rows(n, 4, 1, 1, seed)[:3], [])
    after = sum(_epoch_rows(n, 4, 1, 2, seed, start=12), [])
    assert before + after == order[: 12 + 32] and len(set(before + after)) == 44
    # ranks read disjoint shards
    s0, s1 = (sum(list(StepSampler(n, 4, 1, 2, r, seed)), []) for r in (0, 1))
    assert not set(s0) & set(s1)


class _RandomRows(torch.utils.data.Dataset):
    """Each row draws from Python, NumPy and torch generators, like an augmentation would."""

    def __len__(self):
        return 40

    def __getitem__(self, i):
        import numpy as np
        return (i, random.random(), float(np.random.rand()), float(torch.rand(())))


@pytest.mark.parametrize("workers", [0, 2])
def test_row_randomness_does_not_depend_on_workers_or_resume_point(workers):
    from torch.utils.data import DataLoader
    ds = _RandomRows()

    def read(start, nw):
        s = StepSampler(len(ds), 4, seed=5, start=start)
        dl = DataLoader(SeededRows(ds, 5, 0), batch_sampler=s, collate_fn=lambda b: b, num_workers=nw)
        return {r[0]: r[1:] for batch in dl for r in batch}

    full = read(0, 0)
    resumed = read(12, workers)
    assert resumed and all(full[i] == v for i, v in resumed.items())
    assert len({v for v in full.values()}) == len(full)          # rows really draw different numbers
    st = torch.get_rng_state()
    SeededRows(ds, 5, 0)[3]
    assert torch.equal(st, torch.get_rng_state())                # the caller's generator is left alone
