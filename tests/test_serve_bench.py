"""benchmarks/serve_load.py end to end: it starts `minimind-v serve` (the real CLI, as a subprocess) on a
random tiny model, runs concurrent streaming clients for a bounded time and prints one JSON line."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_serve_load_prints_one_json_line(tmp_path):
    from minimind_v.serve.testing import build_tiny_model
    model = build_tiny_model(tmp_path / "tiny-vlm")     # built here: the benchmark process then imports no torch
    out = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "serve_load.py"), "--model", str(model),
                          "--clients", "3", "--duration", "1.5", "--max-tokens", "6", "--image", "--threads", "1"],
                         capture_output=True, text=True, timeout=180, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.strip().splitlines()
    assert len(lines) == 1
    r = json.loads(lines[0])
    assert r["requests"] > 0 and r["errors"] == 0 and r["clients"] == 3
    assert r["requests_per_s"] > 0 and r["completion_tokens_per_s"] > 0
    assert 0 < r["ttft_ms_p50"] <= r["ttft_ms_p95"] and 0 < r["itl_ms_p50"] <= r["itl_ms_p95"]
    assert 1 <= r["server_peak_batch"] <= 3
