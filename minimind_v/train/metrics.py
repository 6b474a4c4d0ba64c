"""Run metrics: one JSON object per line in RUN/metrics.jsonl, optional wandb/swanlab, and a loss-curve
PNG drawn with Pillow (no plotting library needed)."""
from __future__ import annotations

import json
import math
from pathlib import Path

from PIL import Image, ImageDraw


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


def plot_curves(series: dict[str, list[tuple[float, float]]], out: str | Path, title: str = "training loss",
                xlabel: str = "step", size=(800, 480)) -> Path:
    """Draw one line per series ({name: [(x, y), ...]}) with axes, ticks and a legend."""
    w, h = size
    left, right, top, bottom = 70, 20, 40, 50
    img = Image.new("RGB", size, "white")
    d = ImageDraw.Draw(img)
    pts = [p for s in series.values() for p in s if math.isfinite(p[1])]
    d.text((left, 12), title, fill="black")
    if not pts:
        d.text((w // 2 - 40, h // 2), "no data", fill="black")
        img.save(out)
        return Path(out)
    x0, x1 = min(p[0] for p in pts), max(p[0] for p in pts)
    y0, y1 = min(p[1] for p in pts), max(p[1] for p in pts)
    x1 = x1 if x1 > x0 else x0 + 1
    y1 = y1 if y1 > y0 else y0 + 1
    sx = lambda x: left + (x - x0) / (x1 - x0) * (w - left - right)       # noqa: E731
    sy = lambda y: h - bottom - (y - y0) / (y1 - y0) * (h - top - bottom)  # noqa: E731
    d.line([(left, top), (left, h - bottom), (w - right, h - bottom)], fill="black")
    for i in range(5):
        yv = y0 + (y1 - y0) * i / 4
        d.line([(left - 4, sy(yv)), (left, sy(yv))], fill="black")
        d.text((5, sy(yv) - 6), f"{yv:.3g}", fill="black")
        xv = x0 + (x1 - x0) * i / 4
        d.line([(sx(xv), h - bottom), (sx(xv), h - bottom + 4)], fill="black")
        d.text((sx(xv) - 10, h - bottom + 8), f"{xv:.0f}", fill="black")
    d.text((w // 2 - 15, h - 20), xlabel, fill="black")
    colours = ["#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b"]
    for k, (name, s) in enumerate(series.items()):
        c = colours[k % len(colours)]
        line = [(sx(x), sy(y)) for x, y in s if math.isfinite(y)]
        if len(line) > 1:
            d.line(line, fill=c, width=2)
        elif line:
            d.ellipse([line[0][0] - 2, line[0][1] - 2, line[0][0] + 2, line[0][1] + 2], fill=c)
        d.rectangle([w - right - 160, top + 16 * k, w - right - 150, top + 16 * k + 10], fill=c)
        d.text((w - right - 145, top + 16 * k - 2), name, fill="black")
    img.save(out)
    return Path(out)


def plot_stages(run_dir: str | Path, stages: list[tuple[str, int]], title: str) -> Path:
    """One loss plot for stages trained one after another (RUN/<stage>/metrics.jsonl), each stage's steps
    offset by the steps of the stages before it; written to RUN/loss.png."""
    curves, offset = {}, 0
    for name, steps in stages:
        recs = [x for x in read_metrics(Path(run_dir) / name / "metrics.jsonl") if "loss" in x]
        curves[f"vlm-{name}"] = [(x["step"] + offset, x["loss"]) for x in recs]
        offset += steps
    out = Path(run_dir) / "loss.png"
    plot_curves(curves, out, title=title)
    return out
