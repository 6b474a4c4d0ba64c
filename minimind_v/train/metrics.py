"""Run metrics: one JSON object per line in RUN/metrics.jsonl, optional wandb/swanlab, and loss-curve
PNGs drawn with matplotlib.

The JSON lines are the record (anything can re-plot them); the PNG is a convenience, so matplotlib is
imported only inside the plotting functions. Loss is drawn on a log axis because it falls by factors, not
by amounts: the late, slow part of training stays readable next to the steep start."""
from __future__ import annotations

import json
import math
from pathlib import Path


class MetricsLog:
    def __init__(self, path: str | Path, logger: str = "none", run_name: str = "minimind-v",
                 config: dict | None = None, enabled: bool = True):
        self.path = Path(path)
        self.enabled = enabled
        self.remote = None
        if not enabled:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if logger == "wandb":
            import wandb  # imported only when asked for
            self.remote = wandb.init(project="minimind-v", name=run_name, config=config)
        elif logger == "swanlab":
            import swanlab
            self.remote = swanlab.init(project="minimind-v", experiment_name=run_name, config=config)
        elif logger not in ("none", None):
            raise ValueError(f"unknown logger {logger!r}: use none, wandb or swanlab")

    def log(self, record: dict) -> None:
        if not self.enabled:
            return
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")
        if self.remote is not None:
            self.remote.log({k: v for k, v in record.items() if isinstance(v, (int, float))})

    def close(self):
        if self.remote is not None:
            self.remote.finish()


def read_metrics(path: str | Path) -> list[dict]:
    p = Path(path)
    if not p.exists():
        return []
    return [json.loads(line) for line in p.read_text().splitlines() if line.strip()]


def _figure(size, ncols: int = 1):
    """A matplotlib figure of `size` pixels drawn off-screen. matplotlib is imported here, not at module
    top, so training without plots never pays its import, and the Agg canvas is used directly so no
    global backend or style is changed for a caller that also uses pyplot."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(size[0] / 100, size[1] / 100), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, ncols, sharey=True, squeeze=False)[0]
    return fig, list(axes)


def _finite(points):
    return [(x, y) for x, y in points if math.isfinite(y) and y > 0]


def _smooth(ys: list[float], window: int) -> list[float]:
    """Centred running mean (shorter at the ends), so the trend shows through step-to-step noise without
    lagging behind it; the raw line stays drawn underneath."""
    half = window // 2
    return [sum(ys[max(0, i - half):i + half + 1]) / len(ys[max(0, i - half):i + half + 1]) for i in range(len(ys))]


def _draw_loss(ax, name: str, points, colour) -> None:
    """Raw loss as a thin line, a running mean on top; losses only (log axis: their fall is multiplicative)."""
    pts = _finite(points)
    if not pts:
        ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color="grey")
        return
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    if len(pts) == 1:
        ax.plot(xs, ys, "o", color=colour, label=name)
        return
    window = max(1, len(ys) // 20)
    if window > 1:
        ax.plot(xs, ys, color=colour, alpha=0.3, linewidth=0.8)
        ax.plot(xs, _smooth(ys, window), color=colour, linewidth=1.8, label=f"{name} (mean of {window})")
    else:
        ax.plot(xs, ys, color=colour, linewidth=1.5, label=name)


def _style(ax, xlabel: str) -> None:
    """Log loss axis labelled in plain numbers (2, 3, 4 rather than 2x10^0), as many as fit without
    overlapping (log_ticks.py), light grid, no box."""
    from matplotlib.ticker import FuncFormatter, LogLocator

    from .log_ticks import ReadableLogLocator
    ax.set_yscale("log")
    ax.yaxis.set_major_locator(ReadableLogLocator())
    ax.yaxis.set_minor_locator(LogLocator(base=10, subs=tuple(range(1, 10))))
    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    ax.set_xlabel(xlabel)
    ax.grid(True, which="major", alpha=0.35)
    ax.grid(True, which="minor", alpha=0.12)
    for side in ("top", "right"):
        ax.spines[side].set_visible(False)


def plot_curves(series: dict[str, list[tuple[float, float]]], out: str | Path, title: str = "training loss",
                xlabel: str = "step", size=(800, 480)) -> Path:
    """One line per series ({name: [(x, y), ...]}) on one log-scale loss axis, written as a PNG."""
    fig, (ax,) = _figure(size)
    colours = [f"C{k}" for k in range(10)]
    for k, (name, points) in enumerate(series.items()):
        _draw_loss(ax, name, points, colours[k % len(colours)])
    _style(ax, xlabel)
    ax.set_ylabel("loss")
    ax.set_title(title)
    if any(_finite(s) for s in series.values()):
        ax.legend(frameon=False)
    fig.savefig(out)
    return Path(out)


def plot_stages(run_dir: str | Path, stages: list[tuple[str, int]], title: str) -> Path:
    """The loss of stages trained one after another (RUN/<stage>/metrics.jsonl), one panel per stage
    sharing one log-scale loss axis, so a later stage's lower loss reads against the earlier one's;
    written to RUN/loss.png."""
    width = min(1400, max(800, 420 * len(stages)))
    fig, axes = _figure((width, 420), ncols=max(1, len(stages)))
    for k, ((name, steps), ax) in enumerate(zip(stages, axes)):
        recs = [x for x in read_metrics(Path(run_dir) / name / "metrics.jsonl") if "loss" in x]
        _draw_loss(ax, f"vlm-{name}", [(x["step"], x["loss"]) for x in recs], f"C{k}")
        _style(ax, "step")
        ax.set_title(f"vlm-{name} ({steps} steps)")
        if steps:
            ax.set_xlim(0, steps)
    axes[0].set_ylabel("loss")
    fig.suptitle(title)
    out = Path(run_dir) / "loss.png"
    fig.savefig(out)
    return out
