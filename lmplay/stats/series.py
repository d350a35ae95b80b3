"""Metric series taken from stats records: smoothing and alignment on a token grid (numpy only)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class Series:
    """One line of a plot: a metric against tokens, sorted by tokens."""

    label: str
    dataset: str | None  # validation set name; None for the train series
    tokens: np.ndarray
    values: np.ndarray

    def __len__(self) -> int:
        return len(self.tokens)

    @property
    def constant(self) -> bool:
        """Whether every point holds the same value (a line that says nothing but the value)."""
        return len(self) > 1 and bool(np.all(self.values == self.values[0]))

    def smoothed(self, window: int) -> Series:
        return Series(self.label, self.dataset, self.tokens, moving_average(self.values, window))


def series_from_records(
    label: str, dataset: str | None, records: Sequence[dict[str, Any]], metric: str
) -> Series:
    """Points with a finite metric value, step 0 (0 tokens) included, sorted by tokens.

    A record without the metric, or with `null` (a non-finite value), is left out.
    """
    points = [
        (float(r["tokens"]), float(r[metric]))
        for r in records
        if isinstance(r.get(metric), (int, float)) and r["tokens"] >= 0
    ]
    points = [(t, v) for t, v in points if np.isfinite(v)]
    tokens = np.array([t for t, _ in points], dtype=np.float64)
    values = np.array([v for _, v in points], dtype=np.float64)
    order = np.argsort(tokens, kind="stable")
    return Series(label, dataset, tokens[order], values[order])


def moving_average(values: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over the last `window` points; the first points average what exists.

    The output has the input's length, so it stays aligned with the token axis.
    """
    if window < 1:
        raise ValueError(f"window must be at least 1, got {window}")
    values = np.asarray(values, dtype=np.float64)
    sums = np.concatenate(([0.0], np.cumsum(values)))
    end = np.arange(1, len(values) + 1)
    start = np.maximum(0, end - window)
    return (sums[end] - sums[start]) / (end - start)


def align_to_grid(tokens: np.ndarray, values: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """`values` linearly interpolated at the token positions `grid`; NaN outside `tokens`.

    Never extrapolates: a run that stopped early has no difference past its last point.
    """
    grid = np.asarray(grid, dtype=np.float64)
    if len(tokens) == 0:
        return np.full(grid.shape, np.nan)
    return np.interp(grid, tokens, values, left=np.nan, right=np.nan)


def difference(series: Series, target: Series) -> Series:
    """`series - target` on the target's token grid, keeping only where both have data."""
    delta = align_to_grid(series.tokens, series.values, target.tokens) - target.values
    keep = np.isfinite(delta)
    return Series(series.label, series.dataset, target.tokens[keep], delta[keep])
