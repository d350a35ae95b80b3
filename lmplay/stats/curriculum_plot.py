"""Curriculum views of runs: stage boundaries on every plot, the LR and the realised mixture.

- stage boundaries (`lmplay.stats.stages`), as on every other plot;
- `lr.<ext>` (`--plot lr`): each run's learning rate at every step against tokens (linear axis,
  where schedules read as drawn);
- `mix.<ext>` (`--plot mix`): each dataset's share of the target tokens trained over a trailing
  window of records within a stage (`source_tokens` of the train records), per run.

matplotlib only (no torch), like `lmplay.stats.plot`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.style
import numpy as np

from lmplay.errors import UsageError
from lmplay.stats.figure import MetricFigure
from lmplay.stats.plot import _RC, PlotOptions, _colors, select_runs
from lmplay.stats.runs import RunStats
from lmplay.stats.series import Series
from lmplay.stats.stages import mark_stages, parse_plots

__all__ = ["parse_plots", "plot_curriculum"]


def plot_curriculum(
    runs: list[RunStats], out_dir: Path, options: PlotOptions, plots: tuple[str, ...]
) -> list[Path]:
    """Write `lr.<ext>` and/or `mix.<ext>` into `out_dir`; returns the paths written."""
    labelled, _ = select_runs(runs, options)
    colors = _colors([label for label, _ in labelled])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        for name in plots:
            figure = _lr_figure(labelled, colors) if name == "lr" else _mix_figure(
                labelled, colors, options.window("train")
            )  # fmt: skip
            mark_stages(figure.ax, labelled, colors)
            written.append(figure.save(out_dir / f"{name}.{options.out_type}", options.out_type))
    return written


def _linear(title: str, ylabel: str, colors: dict[str, Any], datasets: list) -> MetricFigure:
    figure = MetricFigure(title, ylabel, colors, datasets)
    figure.ax.set_xscale("linear")
    figure.ax.set_xlabel("tokens seen")
    return figure


def _lr_figure(labelled: list[tuple[str, RunStats]], colors: dict[str, Any]) -> MetricFigure:
    figure = _linear("learning rate per step", "learning rate", colors, [None])
    lines = [
        _series(label, None, [(int(r["tokens"]), float(r["lr"])) for r in run.train if "lr" in r])
        for label, run in labelled
    ]
    if not any(len(line) for line in lines):
        raise UsageError("--plot lr: no train record holds an 'lr'")
    for line in lines:
        if len(line):
            figure.line(line)
    return figure


def _mix_figure(
    labelled: list[tuple[str, RunStats]], colors: dict[str, Any], window: int
) -> MetricFigure:
    names = sorted(
        {n for _, run in labelled for r in run.train for n in r.get("source_tokens", {})}
    )
    if not names:
        raise UsageError("--plot mix: no train record holds 'source_tokens'")
    title = f"realised mixture: share of target tokens over the last {window} records of a stage"
    lines = [
        _series(f"{label} [{name}]", None, _shares(records, name, window))
        for label, run in labelled
        if (records := [r for r in run.train if "source_tokens" in r])
        for name in names
    ]
    figure = _linear(title, "share of target tokens", _colors([s.label for s in lines]), [None])
    figure.legend_title = "run [dataset]: last share"
    for line in lines:
        if len(line):
            figure.line(line)
    return figure


def _shares(records: list[dict[str, Any]], name: str, window: int) -> list[tuple[int, float]]:
    """(tokens, `name`'s share of the target tokens trained over the last `window` records),
    the window never reaching back into the stage before."""
    points, stage_start = [], 0
    for index in range(1, len(records)):
        if records[index].get("stage") != records[index - 1].get("stage"):
            stage_start = index - 1  # the last record of the stage before: where this one began
        before = records[max(stage_start, index - window)]["source_tokens"]
        now = records[index]["source_tokens"]
        total = sum(now.values()) - sum(before.values())
        if total > 0:
            share = (now.get(name, 0) - before.get(name, 0)) / total
            points.append((int(records[index]["tokens"]), share))
    return points


def _series(label: str, dataset: str | None, points: list[tuple[int, float]]) -> Series:
    tokens = np.array([t for t, _ in points], dtype=np.int64)
    return Series(label, dataset, tokens, np.array([v for _, v in points], dtype=np.float64))
