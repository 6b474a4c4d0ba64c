"""The labelled ticks of a log-scale loss axis: as many as fit, never two labels on top of each other.

A loss curve can span one decade (a short fine-tune) or five (the demo's SFT falls from 5 to 0.0004). A
fixed set of labelled ticks per decade is either too sparse for the first or an unreadable stack of
overlapping numbers for the second. So the choice is made when the axis is drawn, from its height in
pixels and its range: the richest of 1-1.5-2-3-4-5-7, 1-2-5, 1-3 and 1 per decade whose closest pair of
ticks is still at least `gap_lines` text lines apart; if even one label per decade is too many, every
k-th power of ten. A range too narrow to hold two such ticks gets evenly spaced round numbers instead.
This module imports matplotlib at its top, so train/metrics.py imports it only inside the function that
styles a plot: training without plots never loads matplotlib."""
from __future__ import annotations

import math

from matplotlib import rcParams
from matplotlib.font_manager import FontProperties
from matplotlib.ticker import Locator, MaxNLocator

# richest first; each a set of mantissas per decade
SUBS = ((1.0, 1.5, 2.0, 3.0, 4.0, 5.0, 7.0), (1.0, 2.0, 5.0), (1.0, 3.0), (1.0,))


def closest_gap(subs: tuple[float, ...]) -> float:
    """The smallest distance, in decades, between two neighbouring ticks of `subs` (wrapping to x10)."""
    logs = [math.log10(s) for s in subs] + [1.0]
    return min(b - a for a, b in zip(logs, logs[1:]))


class ReadableLogLocator(Locator):
    """Major-tick locator for a log axis whose labels never overlap (see the module docstring)."""

    def __init__(self, gap_lines: float = 1.6):
        self.gap_lines = gap_lines

    def _min_gap_px(self) -> float:
        """`gap_lines` lines of the tick-label font (matplotlib's setting for it), in pixels of the figure."""
        points = FontProperties(size=rcParams[f"{self.axis.axis_name}tick.labelsize"]).get_size_in_points()
        return self.gap_lines * points * self.axis.axes.figure.dpi / 72

    def __call__(self):
        lo, hi = self.axis.get_view_interval()
        return self.tick_values(lo, hi)

    def tick_values(self, vmin, vmax):
        vmin, vmax = sorted((vmin, vmax))
        if not (vmin > 0 and math.isfinite(vmax)):
            return []
        height = max(1.0, self.axis.axes.bbox.height if self.axis is not None else 400.0)   # a collapsed axis too
        min_gap = self._min_gap_px() if self.axis is not None else 16.0
        decades = max(math.log10(vmax / vmin), 1e-9)
        px_per_decade = height / decades
        first, last = math.floor(math.log10(vmin)), math.ceil(math.log10(vmax))
        for subs in SUBS:
            if closest_gap(subs) * px_per_decade >= min_gap:
                ticks = [s * 10.0 ** e for e in range(first, last + 1) for s in subs]
                if sum(vmin <= t <= vmax for t in ticks) >= 2:
                    return ticks
                # too narrow a range for two of them: round numbers, evenly spaced (log ~ linear here)
                return list(MaxNLocator(nbins=max(1, int(height // (2 * min_gap))),
                                        steps=[1, 2, 2.5, 5, 10]).tick_values(vmin, vmax))
        step = math.ceil(min_gap / px_per_decade)        # one power of ten in every `step` decades
        return [10.0 ** e for e in range(first - first % step, last + step, step)]
