"""The demo end to end in its one-minute form: every artefact it promises is written and consistent."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest


@pytest.mark.slow
def test_quick_demo_writes_summary_model_and_curve(tmp_path, capsys):
    from minimind_v.recipes.demo import run_demo
    from minimind_v.pipeline import VLM
    summary = run_demo(tmp_path / "demo", quick=True)
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    for key in ("overall", "per_type", "blind", "majority_baseline", "wall_clock_s", "parameters", "model"):
        assert key in saved
    assert saved["overall"] == summary["overall"]
    assert set(saved["per_type"]) == {"colour", "shape", "count", "position"}
    assert 0.0 <= saved["blind"] <= 1.0 and 0.0 < saved["majority_baseline"] <= 1.0
    assert (tmp_path / "demo" / "loss.png").stat().st_size > 1000
    out = capsys.readouterr().out
    assert "overall" in out and "blind" in out and out.count("  Q: ") == 4
    vlm = VLM.load(saved["model"])
    assert vlm.model.num_parameters(include_vision=True) == saved["parameters"]


@pytest.mark.slow
def test_full_demo_keeps_the_readme_promise(tmp_path):
    """The full demo as `./run demo` runs it on a quiet 2-core machine (seed 0, two threads).

    The README's table is a median over seeds and thread counts; this is the one run CI can afford. The
    thread count is fixed rather than chosen by the idle cores, because the result depends on it (the
    arithmetic's order) and CI must check one known configuration, not whichever the load picked. The
    README promises at least 90% overall on every seed and thread count (docs/demo.md). The summary is
    copied to test-artifacts/demo_summary.json, so a CI log's run can be read afterwards."""
    from minimind_v.recipes.demo import run_demo
    summary = run_demo(tmp_path / "demo", examples=0, threads=2)
    saved = json.loads((tmp_path / "demo" / "summary.json").read_text())
    print("full demo:", {k: saved[k] for k in ("overall", "per_type", "blind", "wall_clock_s", "threads")})
    assert saved["overall"] == summary["overall"]
    artifacts = Path(__file__).resolve().parents[1] / "test-artifacts"
    artifacts.mkdir(exist_ok=True)
    shutil.copy(tmp_path / "demo" / "summary.json", artifacts / "demo_summary.json")    # CI's numbers, kept
    assert saved["overall"] >= 0.90, saved["per_type"]
    # every type at least 80% in every run: the six measured runs have 89-100% (this configuration: left/right
    # 100%, docs/demo.md)
    assert min(saved["per_type"].values()) >= 0.80, saved["per_type"]
    assert saved["blind"] < 0.5          # it answers from the pictures, not from the questions' wording
