"""Plots comparing runs: each metric against tokens, and each run's difference to a target run.

matplotlib and numpy only (no torch), so plotting runs beside a training job. For every metric
(loss, accuracy, word_accuracy: those the records hold) and kind (validation; train too when
asked) it writes:

- `<metric>.<ext>`: one line per run (per run and validation set when there are several)
  against tokens on a symlog x axis (linear from 0, so step 0 shows, log beyond; train lines
  smoothed by a trailing moving average); a run whose metric is the same at every point is
  stated in the figure (and `plots.json`) instead of drawn as a flat line;
- `<metric>_diff.<ext>`: each run minus the target run, interpolated on the target's token
  grid, so runs are compared at equal tokens seen;
- `plots.json`: which runs and series each file holds (points, first and last tokens).

Train plots carry a `train_` prefix. Identical inputs give byte-identical files. Runs with no
point to draw yet (nothing recorded past 0 tokens) raise `UsageError` and write nothing. Every
plot marks where each run's stages begin (`lmplay.stats.stages`); `lmplay.stats.curriculum_plot`
draws the LR and the realised mixture.
"""

from __future__ import annotations

import itertools
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")

import matplotlib.style
import orjson

from lmplay.config import PLOT_AVERAGE_WINDOW, PlotConfig, check_plot_values
from lmplay.errors import UsageError
from lmplay.stats.aggregate import RunGroup, group_band
from lmplay.stats.figure import MetricFigure
from lmplay.stats.runs import RunStats
from lmplay.stats.series import Series, difference, series_from_records
from lmplay.stats.stages import mark_stages, parse_plots

DEFAULT_WINDOW = PLOT_AVERAGE_WINDOW
MANIFEST_NAME = "plots.json"
_RC = {"svg.hashsalt": "lmplay", "figure.dpi": 100, "savefig.dpi": 100}
_YLABELS = {
    "loss": "loss (cross-entropy, nats per token)",
    "accuracy": "next-token accuracy",
    "word_accuracy": "word accuracy (aligned words matched / truth words)",
}


@dataclass(frozen=True)
class PlotOptions:
    """What `plot_runs` draws; the flags of `lmp_plotstats` (`PlotConfig`, whose defaults these
    are) map one to one."""

    out_type: str = PlotConfig.out_type
    plot_train: bool = PlotConfig.plot_train
    plot_raw: bool = PlotConfig.plot_raw
    average_count: int | None = PlotConfig.average_count  # None: DEFAULT_WINDOW per kind
    target: str | None = PlotConfig.target  # None: the run with the most tokens
    max_files: int | None = PlotConfig.max_files  # keep the runs with the most tokens (and target)
    min_tokens: int = PlotConfig.min_tokens
    # A metric no record holds is skipped: word_accuracy plots once validation records carry it.
    metrics: tuple[str, ...] = ("loss", "accuracy", "word_accuracy")
    plot: str | None = PlotConfig.plot  # "lr,mix": curriculum plots (lmplay.stats.curriculum_plot)

    def __post_init__(self) -> None:
        check_plot_values(self.out_type, self.average_count, self.max_files, self.min_tokens)
        parse_plots(self.plot)  # an unknown name fails before anything is drawn

    def window(self, kind: str) -> int:
        return self.average_count or DEFAULT_WINDOW[kind]


def plot_runs(runs: list[RunStats], out_dir: Path, options: PlotOptions) -> list[Path]:
    """Write the plots and `plots.json` into `out_dir`; returns the paths written."""
    labelled, target = select_runs(runs, options)
    todo = _plottable(labelled, options)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    colors = _colors([label for label, _ in labelled])
    written: list[Path] = []
    manifest: list[dict[str, Any]] = []
    # The default style, not the user's matplotlibrc, so identical inputs give identical bytes.
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        for kind, metric, lines in todo:
            stem = metric if kind == "validation" else f"{kind}_{metric}"
            window = options.window(kind)
            for suffix, figure, drawn in _plot_metric(lines, kind, metric, target, colors, options):
                mark_stages(figure.ax, labelled, colors)
                path = figure.save(out_dir / f"{stem}{suffix}.{options.out_type}", options.out_type)
                written.append(path)
                manifest.append(_entry(path, kind, metric, window, drawn, diff=bool(suffix)))
    written.append(_write_manifest(out_dir, labelled, target, manifest))
    return written


def plot_groups(
    groups: list[RunGroup], out_dir: Path, options: PlotOptions, band: str = "std"
) -> list[Path]:
    """`groups_<metric>.<ext>`: one mean line per seed group and set, with its band.

    Train plots (`groups_train_<metric>`, when `plot_train`) average each run's smoothed train
    series. Metrics no group has are skipped; returns the paths written.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with matplotlib.style.context("default"), matplotlib.rc_context(_RC):
        for stem, figure in group_figures(groups, options, band):
            written.append(figure.save(out_dir / f"{stem}.{options.out_type}", options.out_type))
    return written


def group_figures(
    groups: list[RunGroup], options: PlotOptions, band: str = "std"
) -> list[tuple[str, MetricFigure]]:
    """(file stem, figure) of each group plot, before saving; `figure.ax` holds the lines.

    Each group's line ends at the mean of its runs' final values, so for validation loss the
    legend's and the line's final value are summary.csv's `mean`.
    """
    colors = _colors([g.label for g in groups])
    kinds = ["validation", "train"] if options.plot_train else ["validation"]
    figures = []
    for kind, metric in itertools.product(kinds, options.metrics):
        window = options.window(kind)
        bands = [
            b
            for g in groups
            for name in (
                [None] if kind == "train" else sorted({n for r in g.runs for n in r.validation})
            )
            if (b := group_band(g, name, metric, band, window)) is not None
        ]
        if not bands:
            continue
        datasets = sorted({b.dataset for b in bands}, key=str)
        spread = "±1 std" if band == "std" else "min to max"
        title = f"{kind} {metric}: mean over seeds ({spread} shaded; x: a seed's last record)"
        figure = MetricFigure(title, _YLABELS.get(metric, metric), colors, datasets)
        final = "final mean (summary.csv)" if (kind, metric) == ("validation", "loss") else ""
        figure.legend_title = f"group [set] (runs): {final or 'final mean'}"
        for b in bands:
            figure.band(b)
        mark_stages(figure.ax, [(g.label, g.runs[0]) for g in groups if g.runs], colors)
        stem = f"groups_{metric}" if kind == "validation" else f"groups_{kind}_{metric}"
        figures.append((stem, figure))
    return figures


def _plottable(
    labelled: list[tuple[str, RunStats]], options: PlotOptions
) -> list[tuple[str, str, list[Series]]]:
    """(kind, metric, series) for each plot to draw; `UsageError` when there is none.

    Validation is plotted when any run has a validation point past 0 tokens; train series when
    asked, or when there is no such point yet (a run that has only validated at the start).
    """
    found = {
        (kind, metric): _collect(labelled, kind, metric)
        for kind, metric in itertools.product(("validation", "train"), options.metrics)
    }
    has_validation = any(found["validation", metric] for metric in options.metrics)
    kinds = ["validation"] if has_validation else []
    if options.plot_train or not has_validation:
        kinds.append("train")
    todo = [(k, m, found[k, m]) for k, m in itertools.product(kinds, options.metrics)]
    todo = [(k, m, lines) for k, m, lines in todo if lines]
    if not todo:
        names = ", ".join(label for label, _ in labelled)
        raise UsageError(f"nothing to plot yet: runs {names} have no record past 0 tokens")
    return todo


def _plot_metric(
    lines: list[Series],
    kind: str,
    metric: str,
    target: str,
    colors: dict[str, Any],
    options: PlotOptions,
) -> list[tuple[str, MetricFigure, list[Series]]]:
    """(file suffix, figure, series drawn): the metric and, when the target has it, the diff."""
    window = options.window(kind)
    smooth = [s.smoothed(window) for s in lines]
    datasets = sorted({s.dataset for s in lines}, key=str)
    on = f" on {datasets[0]}" if len(datasets) == 1 and datasets[0] is not None else ""
    title = f"{kind} {metric}{on}" + (f" (moving average of {window})" if window > 1 else "")
    ylabel = _YLABELS.get(metric, metric)
    figure = MetricFigure(title, ylabel, colors, datasets)
    for raw, line in zip(lines, smooth, strict=True):
        figure.line(line, raw=raw if options.plot_raw else None)
    plots = [("", figure, smooth)]
    targets = {s.dataset: s for s in smooth if s.label == target}
    if targets:
        diffs = [difference(s, targets[s.dataset]) for s in smooth if s.dataset in targets]
        title = f"{kind} {metric}{on} minus {target} (at the target's tokens)"
        figure = MetricFigure(title, f"{metric} minus {target}", colors, datasets)
        figure.state_constants = False  # a flat difference is a finding, not a dead metric
        for line in diffs:
            figure.line(line, emphasis=line.label == target)
        plots.append(("_diff", figure, diffs))
    return plots


def select_runs(
    runs: list[RunStats], options: PlotOptions
) -> tuple[list[tuple[str, RunStats]], str]:
    """Unique labels, `--min-tokens` and `--max-files` applied; returns (runs by label, target).

    An explicitly named target is always kept; an unknown one raises `UsageError` listing names.
    """
    if not runs:
        raise UsageError("no runs to plot")
    labelled = label_runs(runs)
    explicit = resolve_target(labelled, options.target) if options.target is not None else None
    kept = [(lb, r) for lb, r in labelled if r.tokens >= options.min_tokens or lb == explicit]
    if not kept:
        most = max(r.tokens for r in runs)
        raise UsageError(f"no run has at least {options.min_tokens} tokens (the most is {most})")
    target = explicit or min(kept, key=lambda lr: (-lr[1].tokens, lr[0]))[0]
    if options.max_files is not None:
        ranked = sorted(kept, key=lambda lr: (lr[0] != target, -lr[1].tokens, lr[0]))
        kept = sorted(ranked[: options.max_files], key=lambda lr: lr[0])
    return kept, target


def label_runs(runs: list[RunStats]) -> list[tuple[str, RunStats]]:
    """Legend labels, sorted: the run name, with its folder (or path) added where names clash."""
    labels = [r.run for r in runs]
    for disambiguate in (
        lambda r: f"{r.run} ({r.path.parent.name})",
        lambda r: f"{r.run} ({r.path})",
    ):
        clashes = Counter(labels)
        labels = [
            disambiguate(r) if clashes[lb] > 1 else lb for lb, r in zip(labels, runs, strict=True)
        ]
    return sorted(zip(labels, runs, strict=True), key=lambda lr: (lr[0], str(lr[1].path)))


def resolve_target(labelled: list[tuple[str, RunStats]], name: str) -> str:
    matches = [lb for lb, _ in labelled if lb == name] or [
        lb for lb, r in labelled if r.run == name
    ]
    if len(matches) == 1:
        return matches[0]
    names = ", ".join(lb for lb, _ in labelled)
    if matches:
        raise UsageError(f"--target {name!r} is ambiguous; runs: {names}")
    raise UsageError(f"unknown --target {name!r}; runs: {names}")


def _collect(labelled: list[tuple[str, RunStats]], kind: str, metric: str) -> list[Series]:
    lines = []
    for label, run in labelled:
        if kind == "train":
            lines.append(series_from_records(label, None, run.train, metric))
        else:
            for name in sorted(run.validation):
                lines.append(series_from_records(label, name, run.validation[name], metric))
    return [s for s in lines if len(s) and s.tokens[-1] > 0]


def _colors(labels: list[str]) -> dict[str, Any]:
    palette = matplotlib.colormaps["tab10" if len(labels) <= 10 else "tab20"].colors
    return {label: palette[i % len(palette)] for i, label in enumerate(labels)}


def _entry(
    path: Path, kind: str, metric: str, window: int, lines: list[Series], *, diff: bool
) -> dict[str, Any]:
    series = [
        {
            "run": s.label,
            "dataset": s.dataset,
            "points": len(s),
            "first_tokens": int(s.tokens[0]) if len(s) else None,
            "last_tokens": int(s.tokens[-1]) if len(s) else None,
            **({"constant": float(s.values[0])} if s.constant and not diff else {}),
        }
        for s in lines
    ]
    return {
        "file": path.name,
        "kind": kind,
        "metric": metric,
        "diff": diff,
        "window": window,
        "series": series,
    }


def _write_manifest(
    out_dir: Path, labelled: list[tuple[str, RunStats]], target: str, plots: list[dict[str, Any]]
) -> Path:
    runs = [
        {
            "label": lb,
            "run": r.run,
            "exp": r.exp,
            "model": r.model,
            "path": str(r.path),
            "tokens": r.tokens,
        }
        for lb, r in labelled
    ]
    doc = {"format": "lmplay-plots", "version": 1, "target": target, "runs": runs, "plots": plots}
    path = out_dir / MANIFEST_NAME
    path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS))
    return path
