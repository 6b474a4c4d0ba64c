"""Resident memory of a training run stays flat as the parquet file grows (100 MB -> 2 GB).

For each size, a synthetic image-caption parquet file is generated (incompressible noise PNGs, no
compression, no dictionary encoding, small row groups, so the file really is that big), then a real
`minimind-v train --stage vlm-pretrain` run with 2 DataLoader workers reads the same number of random
rows from it. The run's process tree (trainer + workers) is sampled every 0.1 s from /proc:

    rss    sum of VmRSS          (shared pages counted once per process)
    pss    sum of Pss            (shared pages split between the processes: the fair total)
    anon   sum of RssAnon        (private memory: decoded row groups, tensors, the model)
    file   sum of RssFile        (file-backed pages, including the memory-mapped parquet file)

The loader maps a file only while it reads one row group (data/parquet.py), so `file` does not grow
with the part of the file touched so far. Prints one JSON line; progress goes to stderr.

    python benchmarks/loader_memory.py [--sizes-mb 100,2000] [--steps 60] [--workdir /tmp]
"""
from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from PIL import Image

FIELDS = {"VmRSS": "rss", "RssAnon": "anon", "RssFile": "file"}


def noise_pngs(k: int, side: int, seed: int = 0) -> list[bytes]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(k):
        buf = io.BytesIO()
        Image.fromarray(rng.integers(0, 256, (side, side, 3), dtype=np.uint8)).save(buf, "PNG")
        out.append(buf.getvalue())
    return out


def write_file(path: Path, size_mb: float, side: int, group: int) -> int:
    """Write about `size_mb` MiB of rows (a pool of 64 noise PNGs repeated); returns the row count."""
    imgs = noise_pngs(64, side)
    conv = json.dumps([{"role": "user", "content": "<image>\nDescribe the picture."},
                       {"role": "assistant", "content": "Coloured noise, no shapes."}])
    n = int(size_mb * 2**20 / len(imgs[0]))
    n -= n % group
    schema = pa.schema([("conversations", pa.string()), ("image_bytes", pa.binary()), ("image_names", pa.string())])
    with pq.ParquetWriter(path, schema, compression="none", use_dictionary=False) as w:
        for start in range(0, n, group):
            rows = range(start, start + group)
            t = pa.table({"conversations": [conv] * group, "image_bytes": [imgs[i % len(imgs)] for i in rows],
                          "image_names": [f"noise/{i}.png" for i in rows]}, schema=schema)
            w.write_table(t, row_group_size=group)
    return n


def _children(pid: int) -> list[int]:
    kids = []
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{task}/children") as f:
                kids += [int(c) for c in f.read().split()]
    except OSError:
        pass
    return kids


def _tree(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += _children(p)
    return out


def _memory(pid: int) -> dict[str, float] | None:
    """Summed memory (MiB) of the process and its descendants."""
    tot = {"rss": 0.0, "pss": 0.0, "anon": 0.0, "file": 0.0, "procs": 0}
    for p in _tree(pid):
        try:
            with open(f"/proc/{p}/status") as f:
                for line in f:
                    k, _, v = line.partition(":")
                    if k in FIELDS:
                        tot[FIELDS[k]] += int(v.split()[0]) / 1024
            with open(f"/proc/{p}/smaps_rollup") as f:
                for line in f:
                    if line.startswith("Pss:"):
                        tot["pss"] += int(line.split()[1]) / 1024
            tot["procs"] += 1
        except OSError:          # the process ended between listing and reading
            continue
    return tot if tot["procs"] else None


def run_once(data: Path, tok: Path, out: Path, steps: int, batch: int, workers: int) -> dict:
    cmd = [sys.executable, "-m", "minimind_v.cli", "train", "--stage", "vlm-pretrain", "--data", str(data),
           "--out", str(out), "--tokenizer", str(tok), "--max-steps", str(steps), "--batch-size", str(batch),
           "--num-workers", str(workers), "--max-length", "96", "--no-progress", "--log-every", str(steps),
           "--seed", "0"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    t0 = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    samples = []
    while proc.poll() is None:
        m = _memory(proc.pid)
        if m is not None:
            samples.append(m)
        time.sleep(0.1)
    log = proc.stdout.read()
    if proc.returncode != 0:
        raise RuntimeError(f"training failed:\n{log}")
    wall = time.time() - t0
    full = [s for s in samples if s["procs"] >= 1 + workers] or samples     # while the workers are alive
    peak = {k: round(max(s[k] for s in full), 1) for k in ("rss", "pss", "anon", "file")}
    return {**{f"peak_{k}_mb": v for k, v in peak.items()}, "wall_s": round(wall, 1),
            "rows_per_s": round(steps * batch / wall, 1), "samples": len(samples)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sizes-mb", default="100,2000", help="file sizes in MiB, comma-separated")
    ap.add_argument("--steps", type=int, default=60, help="optimizer steps per run (same for every size)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--image-side", type=int, default=128, help="noise PNG side (128 px: about 48 KiB each)")
    ap.add_argument("--rows-per-group", type=int, default=64)
    ap.add_argument("--workdir", default=None, help="where the files go (default: a temporary folder)")
    ap.add_argument("--keep", action="store_true", help="keep the generated files")
    a = ap.parse_args(argv)

    from minimind_v.datatools import synth
    from minimind_v.tokenizer import train_tokenizer
    work = Path(tempfile.mkdtemp(prefix="loader_memory_", dir=a.workdir))
    try:
        tok = work / "tok"
        train_tokenizer(synth.corpus(200, 0) + ["Coloured noise, no shapes."], vocab_size=300, out=tok,
                        show_progress=False)
        runs = []
        for size in [float(s) for s in a.sizes_mb.split(",")]:
            f = work / f"noise_{int(size)}mb.parquet"
            t = time.time()
            rows = write_file(f, size, a.image_side, a.rows_per_group)
            print(f"wrote {f.stat().st_size / 2**20:.0f} MiB ({rows} rows) in {time.time() - t:.0f} s", file=sys.stderr)
            res = run_once(f, tok, work / f"run_{int(size)}", a.steps, a.batch_size, a.workers)
            res = {"file_mb": round(f.stat().st_size / 2**20), "rows": rows, **res}
            print(json.dumps(res), file=sys.stderr)
            runs.append(res)
            f.unlink()
        first, last = runs[0], runs[-1]
        print(json.dumps({
            "benchmark": "loader_memory", "workers": a.workers, "steps": a.steps, "batch_size": a.batch_size,
            "rows_per_group": a.rows_per_group, "runs": runs,
            "file_growth": round(last["file_mb"] / first["file_mb"], 1),
            "rss_growth": round(last["peak_rss_mb"] / first["peak_rss_mb"], 3),
            "pss_growth": round(last["peak_pss_mb"] / first["peak_pss_mb"], 3)}))
    finally:
        if not a.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
