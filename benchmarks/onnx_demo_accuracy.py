"""The demo model through ONNX: held-out accuracy and greedy answers of PyTorch, ONNX fp32 and ONNX int8, and
the files' sizes (one JSON line).

    minimind-v demo --out runs/demo                                   # the trained demo model (about 7 min)
    python benchmarks/onnx_demo_accuracy.py --model runs/demo/sft/model --data runs/demo/heldout/eval.parquet \\
        --out benchmarks/results/cpu-onnx-demo.jsonl

The model folder is exported twice (`export --to onnx`, fp32, and `--quantize int8`: onnxruntime's dynamic
quantization) into a temporary folder; every held-out question is answered greedily by the three, in the
same batches (minimind_v.eval.evaluate, the scoring of `minimind-v eval`). Fields: n, accuracy of each,
int8_accuracy_delta_points = 100 * (int8 - fp32), same_answers_fp32 / same_answers_int8 (replies identical
to PyTorch's, of n), fp32_mb / int8_mb (the .onnx files) and int8_size_ratio = int8 / fp32; date, versions,
machine. The aims: fp32 answers all identical, int8 within 1 point of fp32 at <= 30% of its size.
"""
from __future__ import annotations

import argparse
import datetime
import json
import sys
import tempfile
from pathlib import Path
from types import SimpleNamespace

import torch
from onnx_decode import versions
from train_throughput import emit, machine_info

from minimind_v.eval.evaluate import evaluate, load_eval_rows
from minimind_v.pipeline import VLM
from minimind_v.portable.onnx_export import export_onnx
from minimind_v.portable.runtime import OnnxVLM


def as_evaluated(rt: OnnxVLM):
    """The two things evaluate() reads from a VLM: answer_batch and the picture side (for --blind)."""
    vision = SimpleNamespace(image_size=rt.pix["image_size"])
    return SimpleNamespace(answer_batch=rt.answer_batch, model=SimpleNamespace(cfg=SimpleNamespace(vision=vision)))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description="Demo accuracy and answers: PyTorch vs ONNX fp32 vs ONNX int8.")
    p.add_argument("--model", required=True, help="the demo's model folder (runs/demo/sft/model)")
    p.add_argument("--data", required=True, help="held-out eval parquet (runs/demo/heldout/eval.parquet)")
    p.add_argument("--limit", type=int)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--max-new-tokens", type=int, default=40)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", help="also append the JSON line to this file")
    a = p.parse_args(argv)
    torch.set_num_threads(a.threads)
    rows = load_eval_rows([a.data], a.limit)
    kw = dict(batch_size=a.batch_size, max_new_tokens=a.max_new_tokens, progress=False)
    res = {"benchmark": "onnx_demo_accuracy",
           "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"), "model": a.model}
    torch_res = evaluate(VLM.load(a.model), rows, **kw)
    res["n"], res["torch_accuracy"] = torch_res["n"], round(torch_res["overall"], 4)
    with tempfile.TemporaryDirectory() as tmp:
        for name, quant in (("fp32", None), ("int8", "int8")):
            folder = export_onnx(a.model, Path(tmp) / name, quantize=quant, log=lambda m: print(m, file=sys.stderr))
            res[f"{name}_mb"] = round(sum(f.stat().st_size for f in folder.glob("*.onnx")) / 1e6, 2)
            r = evaluate(as_evaluated(OnnxVLM.load(folder, threads=a.threads)), rows, **kw)
            res[f"{name}_accuracy"] = round(r["overall"], 4)
            res[f"same_answers_{name}"] = sum(x["reply"] == y["reply"] for x, y in
                                              zip(r["predictions"], torch_res["predictions"]))
    res["int8_accuracy_delta_points"] = round(100 * (res["int8_accuracy"] - res["fp32_accuracy"]), 2)
    res["int8_size_ratio"] = round(res["int8_mb"] / res["fp32_mb"], 3)
    res["versions"] = versions()
    res["machine"] = machine_info(torch.device("cpu"))
    emit(json.dumps(res), a.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
