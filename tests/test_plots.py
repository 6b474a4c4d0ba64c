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


def drawn_figures(monkeypatch):
    """Every matplotlib Figure the plotting functions save, kept for inspection after the PNG is written."""
    from matplotlib.figure import Figure
    saved, save = [], Figure.savefig

    def keep(fig, *args, **kwargs):
        saved.append(fig)
        return save(fig, *args, **kwargs)
    monkeypatch.setattr(Figure, "savefig", keep)
    return saved


def y_labels(fig):
    """The visible, non-empty y tick labels of every panel, with their boxes in pixels (after drawing)."""
    renderer = fig.canvas.get_renderer()
    out = []
    for ax in fig.axes:
        lo, hi = sorted(ax.get_ylim())
        for tick in ax.yaxis.get_major_ticks():
            label = tick.label1
            if label.get_visible() and label.get_text() and lo <= tick.get_loc() <= hi:
                out.append((ax, label.get_text(), label.get_window_extent(renderer)))
    return out


def overlaps(labels):
    return [(a, b) for i, (ax1, a, box1) in enumerate(labels) for ax2, b, box2 in labels[i + 1:]
            if ax1 is ax2 and box1.overlaps(box2)]


def write_losses(path, losses):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps({"step": s + 1, "loss": v}) + "\n" for s, v in enumerate(losses)))


def test_log_axis_labels_never_overlap(tmp_path, monkeypatch):
    """The demo's curve spans five decades (about 5 down to 0.0004): one label per tick of 1-1.5-2-3-4-5-7
    stacked about ten numbers per 100 pixels on top of each other. Whatever the span, the labels drawn must
    not touch, and there must still be at least two of them to read a value off."""
    saved = drawn_figures(monkeypatch)
    spans = {"five decades": (5.0, 4e-4), "one decade": (8.0, 0.9), "narrow": (2.9, 2.1),
             "eight decades": (30.0, 3e-7)}
    for k, (name, (start, end)) in enumerate(spans.items()):
        run = tmp_path / f"run{k}"
        losses = [start * (end / start) ** (i / 199) for i in range(200)]
        write_losses(run / "pretrain" / "metrics.jsonl", [start] * 50)
        write_losses(run / "sft" / "metrics.jsonl", losses)
        plot_stages(run, [("pretrain", 50), ("sft", 200)], title=name)
        plot_curves({"loss": list(enumerate(losses))}, run / "curve.png", size=(600, 300))
    assert len(saved) == 2 * len(spans)
    for fig in saved:
        labels = y_labels(fig)
        title = fig.get_suptitle() or fig.axes[0].get_title()
        assert len(labels) >= 2, (title, [t for _, t, _ in labels])
        assert not overlaps(labels), (title, overlaps(labels))
        heights = fig.axes[0].bbox.height
        assert len(labels) <= heights / 10, (title, len(labels))
