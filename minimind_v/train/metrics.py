"""Run metrics: one JSON object per line in RUN/metrics.jsonl, optional wandb/swanlab, and loss-curve
PNGs drawn with matplotlib.

The JSON lines are the record (anything can re-plot them); the PNG is a convenience, so matplotlib is
imported only inside the plotting functions. Loss is drawn on a log axis because it falls by factors, not
by amounts: the late, slow part of training stays readable next to the steep start.

`Window` sums what happened since the last log line (loss, rows, real tokens, pictures, attention FLOPs)
and `log_window` turns it into one metrics record: loss, lr, step time, samples/s, real tokens/s, padding
share and MFU (FLOPs counted in flops.py), summed over ranks."""
from __future__ import annotations

import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .distributed import all_reduce_sum
from .flops import flops_breakdown, trainable_fraction


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


@dataclass
class Window:
    """Sums over the optimizer steps since the last log line (this process's share)."""
    loss: torch.Tensor           # sum of the finite steps' losses, kept on the device (no host sync)
    n: int = 0                   # finite steps
    samples: int = 0
    real: int = 0                # non-pad tokens
    tokens: int = 0
    labels: int = 0
    images: int = 0
    len_sum: float = 0.0         # sum of squared row lengths (attention FLOPs)
    steps: int = 0
    t0: float = field(default_factory=time.perf_counter)

    def add_batch(self, batch) -> None:
        self.samples += batch.n_samples
        self.real += batch.n_real_tokens
        self.tokens += batch.n_tokens
        self.images += 0 if batch.pixel_values is None else batch.pixel_values.shape[0]
        self.len_sum += batch.sum_sq_len
        self.labels += batch.n_label_tokens

    def reset(self) -> None:
        self.loss = torch.zeros_like(self.loss)
        self.n = self.samples = self.real = self.tokens = self.labels = self.images = self.steps = 0
        self.len_sum = 0.0
        self.t0 = time.perf_counter()


def log_window(w: Window, p, run, skipped: Counter) -> float:
    """Log one interval and start the next: the numbers are summed over ranks (a collective call), rank 0
    writes them. Returns the interval's mean loss."""
    dist, model, bar, log = p.dist, p.model, p.bar, p.log
    dt = time.perf_counter() - w.t0
    loss_sum = w.loss.detach().double().reshape(1)
    counts = [w.n, w.samples, w.real, w.tokens, w.images, w.labels, w.len_sum]
    stats = torch.cat([loss_sum, torch.tensor(counts, dtype=torch.float64, device=loss_sum.device)])
    if dist.enabled:
        stats = all_reduce_sum(stats)
    loss_sum, n, samples, real, tokens, images, labels, len_sum = stats.tolist()
    loss = loss_sum / n if n else float("nan")
    steps = max(1, w.steps)
    flops = sum(flops_breakdown(model.cfg, int(real), int(labels), len_sum, int(images), trainable_fraction(model),
                                model.vision_trainable).values())
    rec = {"step": run.step, "epoch": run.epoch, "loss": round(loss, 5), "lr": p.opt.param_groups[0]["lr"],
           "step_time_s": round(dt / steps, 4), "samples_per_s": round(samples / dt, 2),
           "real_tokens_per_s": round(real / dt, 1), "tokens_per_s": round(tokens / dt, 1),
           "pad_fraction": round(1 - real / max(1.0, tokens), 3),
           "mfu": round(flops / dt / p.peak / dist.world, 4) if p.peak else None,
           "skipped": sum(skipped.values()), "skipped_by_kind": dict(sorted(skipped.items())),
           "bad_steps": run.bad_steps}
    p.metrics.log(rec)
    if bar is not None:
        bar.set_postfix(loss=f"{loss:.3f}", lr=f"{rec['lr']:.2e}", tok_s=f"{rec['real_tokens_per_s']:.0f}",
                        skipped=rec["skipped"])
    elif dist.main:
        log(json.dumps({k: v for k, v in rec.items() if k != "skipped_by_kind"}))
    if skipped and dist.main:
        line = "skipped rows so far: " + ", ".join(f"{k}={v}" for k, v in sorted(skipped.items()))
        (bar.write if bar is not None else log)(line if bar is None else f"[train] {line}")
    w.reset()
    return loss


def drop_metrics_after(path: Path, step: int) -> None:
    """After a resume, forget metric records of steps that will be trained again."""
    if not path.exists():
        return
    kept = [line for line in path.read_text().splitlines()
            if line.strip() and json.loads(line).get("step", 0) <= step]
    tmp = path.with_suffix(".jsonl.tmp")
    tmp.write_text("".join(line + "\n" for line in kept))
    tmp.replace(path)

