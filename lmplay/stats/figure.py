"""One figure of a metric against tokens: lines of runs, or seed groups' means with bands.

matplotlib only (no torch). Used by `lmplay.stats.plot`, which decides what goes in a figure.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from lmplay.stats.aggregate import Band
from lmplay.stats.series import Series

# Dates and software versions left out so identical inputs give identical bytes.
_SAVE_METADATA: dict[str, dict[str, Any]] = {
    "png": {"Software": None},
    "svg": {"Date": None, "Creator": None},
    "pdf": {"CreationDate": None, "Creator": None, "Producer": None},
}
_LINESTYLES = ("-", "--", ":", "-.")
_MARKED_POINTS = 60  # series with at most this many points mark each measurement


class MetricFigure:
    """One axes of metric against tokens with the legend outside on the right.

    The x axis is symlog: linear from 0 up to the first power of ten below the smallest
    positive token count, log beyond, so step 0 is on the plot. Legend entries end with each
    line's last value, so final results read off the legend. A line whose value never changes
    is stated in a note on the axes instead of drawn (`state_constants`).
    """

    def __init__(
        self, title: str, ylabel: str, colors: dict[str, Any], datasets: list[str | None]
    ) -> None:
        self.fig = Figure(figsize=(10, 6))
        self.ax = self.fig.add_subplot()
        self.ax.set_title(title)
        self.ax.set_ylabel(ylabel)
        self.ax.grid(True, which="major", alpha=0.3)
        self.colors = colors
        self.legend_title = "run: last value"
        self.styles = {d: _LINESTYLES[i % len(_LINESTYLES)] for i, d in enumerate(datasets)}
        self.state_constants = True
        self.constants: list[str] = []  # notes for the lines not drawn
        self._smallest_x = math.inf  # smallest positive token count drawn

    def _left_out(self, label: str, values: Any, spread: bool = False) -> bool:
        """Whether the line is stated in a note instead of drawn: the same value at every point
        (and no spread between the runs of a group)."""
        flat = len(values) > 1 and bool((values == values[0]).all()) and not spread
        if not (self.state_constants and flat):
            return False
        self.constants.append(f"{label}: {values[0]:.4g} at every point (not drawn)")
        return True

    def _note_x(self, tokens: Any) -> None:
        positive = [float(t) for t in tokens if t > 0]
        if positive:
            self._smallest_x = min(self._smallest_x, min(positive))

    def line(self, series: Series, *, raw: Series | None = None, emphasis: bool = False) -> None:
        color = self.colors[series.label]
        style = self.styles[series.dataset]
        label = series.label if len(self.styles) == 1 else f"{series.label} [{series.dataset}]"
        if not emphasis and self._left_out(label, series.values):
            return
        if emphasis:
            label += " (target)"
        elif len(series):  # a diff without overlap with the target is empty
            label += f": {series.values[-1]:.4g}"
        self._note_x(series.tokens)
        if raw is not None:
            self.ax.plot(raw.tokens, raw.values, color=color, ls=style, lw=0.8, alpha=0.25)
        width = 2.5 if emphasis else 1.5
        marker = "o" if len(series) <= _MARKED_POINTS else None
        self.ax.plot(
            series.tokens, series.values, color=color, ls=style, lw=width, label=label,
            marker=marker, markersize=3.5,
        )  # fmt: skip

    def band(self, band: Band) -> None:
        """A group's mean line, labelled with n and its last mean, over its shaded band."""
        color = self.colors[band.label]
        style = self.styles[band.dataset]
        on = "" if len(self.styles) == 1 else f" [{band.dataset}]"
        name = f"{band.label}{on} (n={band.n})"
        if self._left_out(name, band.mean, spread=bool((band.low != band.high).any())):
            return
        label = f"{name}: {band.mean[-1]:.4g}"
        marker = "o" if len(band.tokens) <= _MARKED_POINTS else None
        self._note_x(band.tokens)
        self.ax.fill_between(band.tokens, band.low, band.high, color=color, alpha=0.2, lw=0)
        self.ax.plot(
            band.tokens, band.mean, color=color, ls=style, lw=1.5, label=label,
            marker=marker, markersize=3.5,
        )  # fmt: skip
        if band.ends:  # a seed's records end here; past it the run holds its last value
            ends = list(band.ends)
            self.ax.plot(
                band.tokens[ends], band.mean[ends], ls="none", marker="x", markersize=9,
                color=color, label="_seed ends",
            )  # fmt: skip

    def _set_x_axis(self) -> None:
        if math.isfinite(self._smallest_x):
            threshold = 10 ** math.floor(math.log10(self._smallest_x))
            self.ax.set_xscale("symlog", linthresh=threshold, linscale=0.5)
            self.ax.set_xlim(left=0)
            self.ax.set_xlabel(f"tokens seen (linear up to {threshold:g}, log scale beyond)")
        else:
            self.ax.set_xlabel("tokens seen")

    def save(self, path: Path, out_type: str) -> Path:
        self._set_x_axis()
        if self.constants:
            self.ax.text(
                0.01, 0.99, "\n".join(self.constants), transform=self.ax.transAxes, va="top",
                fontsize="small", bbox={"facecolor": "white", "alpha": 0.8, "lw": 0},
            )  # fmt: skip
        if self.ax.lines:
            self.ax.legend(
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                fontsize="small",
                title=self.legend_title,
                title_fontsize="small",
            )
        self.fig.savefig(
            path, format=out_type, bbox_inches="tight", metadata=_SAVE_METADATA[out_type]
        )
        return path
