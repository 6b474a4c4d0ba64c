"""Loss curves and the token-length histogram: real PNGs, one panel per stage, no global matplotlib changes."""
import json
import math

import matplotlib
from PIL import Image

from minimind_v.datatools.stats import draw_histogram
from minimind_v.train.metrics import plot_curves, plot_stages


def write_metrics(path, steps, start, end):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for s in range(1, steps + 1):
            f.write(json.dumps({"step": s, "loss": end + (start - end) * math.exp(-s / 10)}) + "\n")
        f.write(json.dumps({"step": steps, "eval": 1.0}) + "\n")        # records without loss are ignored


def test_plot_stages_draws_one_panel_per_stage(tmp_path):
    write_metrics(tmp_path / "pretrain" / "metrics.jsonl", 40, 8.0, 3.0)
    write_metrics(tmp_path / "sft" / "metrics.jsonl", 30, 3.0, 1.0)
    rc = dict(matplotlib.rcParams)
    out = plot_stages(tmp_path, [("pretrain", 40), ("sft", 30)], title="two stages")
    assert out == tmp_path / "loss.png"
    with Image.open(out) as img:
        assert img.format == "PNG" and img.size == (840, 420)
        a = img.convert("L")
        # both panels hold a curve: dark pixels in the left and in the right half
        for box in ((0, 0, 420, 420), (420, 0, 840, 420)):
            assert a.crop(box).getextrema()[0] < 100
    assert dict(matplotlib.rcParams) == rc           # no style or backend change leaks to the caller


def test_plot_curves_handles_empty_and_non_finite(tmp_path):
    out = plot_curves({"a": [], "b": [(1, float("nan")), (2, float("inf"))]}, tmp_path / "empty.png")
    with Image.open(out) as img:
        assert img.size == (800, 480)
    out = plot_curves({"a": [(0, 5.0), (1, 4.0), (2, float("nan")), (3, 2.0)]}, tmp_path / "one.png", size=(600, 300))
    with Image.open(out) as img:
        assert img.size == (600, 300)


def test_histogram_png(tmp_path):
    png = tmp_path / "sub" / "lengths.png"
    draw_histogram([10, 20, 20, 35, 80], png, max_length=64)
    with Image.open(png) as img:
        assert img.format == "PNG" and img.size == (800, 420)
