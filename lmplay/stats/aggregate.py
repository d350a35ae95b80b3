"""Runs that differ only by seed, taken together: groups, and mean curves with bands.

numpy only (no torch, no matplotlib). Definitions, so results can be checked by hand:

- **Group.** Two runs are in one group when their `exp` and their stats `meta` without `seed`
  are equal. A group's label names what differs between groups (`exp=modern`,
  `model_args.embed_dim=64`, ...), or the `exp` when every group agrees on everything else.
- **Mean curve.** A group's runs are aligned on `samples` (the same for every seed of a run
  configuration, unlike `tokens`, which depend on the data order), at every sample count some
  run of the group reached. Each run is carried to the group's end: past its last record it
  holds its last value (a sample count it skipped is interpolated), so every point averages
  all n runs and the curve ends at the mean of the runs' final values, the table's value.
  Where a run ends before the group does, the curve is marked. A point's x position is the
  mean tokens of the runs that reached it. The `std` band is the mean ± one sample standard
  deviation (n - 1 in the denominator); the `minmax` band spans the lowest and highest run.

Final losses and the comparison of two groups are in `lmplay.stats.compare`, the summary files
in `lmplay.stats.summary`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson

from lmplay.config import PLOT_BANDS
from lmplay.errors import UsageError
from lmplay.stats.runs import RunStats
from lmplay.stats.series import moving_average

BANDS = PLOT_BANDS


@dataclass(frozen=True)
class RunGroup:
    label: str
    key: str  # canonical JSON of exp + meta without seed
    runs: tuple[RunStats, ...]

    @property
    def seeds(self) -> list[Any]:
        return [run.meta.get("seed") for run in self.runs]


def group_key_fields(run: RunStats) -> dict[str, Any]:
    """What must be equal for two runs to be seeds of one experiment."""
    return {"exp": run.exp, **{k: v for k, v in run.meta.items() if k != "seed"}}


def group_runs(runs: Sequence[RunStats]) -> list[RunGroup]:
    """Runs grouped by `group_key_fields`, labelled by what differs; sorted by label."""
    by_key: dict[str, list[RunStats]] = {}
    fields: dict[str, dict[str, Any]] = {}
    for run in runs:
        key_fields = group_key_fields(run)
        key = orjson.dumps(key_fields, option=orjson.OPT_SORT_KEYS).decode()
        by_key.setdefault(key, []).append(run)
        fields[key] = _flatten(key_fields)
    names = sorted({name for f in fields.values() for name in f})
    varying = [name for name in names if not _same(fields, name)]
    groups = []
    for key, members in by_key.items():
        parts = [f"{name}={_text(fields[key].get(name))}" for name in varying]
        label = ",".join(parts) or members[0].exp or "runs"
        ordered = sorted(members, key=lambda r: (str(r.meta.get("seed")), str(r.path)))
        groups.append(RunGroup(label=label, key=key, runs=tuple(ordered)))
    groups.sort(key=lambda g: g.label)
    labels = [g.label for g in groups]
    if len(set(labels)) != len(labels):  # differ only in a value that prints the same
        groups = [RunGroup(f"{g.label} #{i + 1}", g.key, g.runs) for i, g in enumerate(groups)]
    return groups


def find_group(groups: Sequence[RunGroup], name: str) -> RunGroup:
    """The group labelled `name`, or the only one whose label contains it."""
    exact = [g for g in groups if g.label == name]
    matches = exact or [g for g in groups if name in g.label]
    if len(matches) == 1:
        return matches[0]
    labels = "; ".join(g.label for g in groups)
    kind = "ambiguous" if matches else "unknown"
    raise UsageError(f"--compare: {kind} group {name!r}; groups: {labels}")


@dataclass(frozen=True)
class Band:
    """A group's mean curve of one metric on one set (None for train) with its band."""

    label: str
    dataset: str | None
    samples: np.ndarray
    tokens: np.ndarray  # mean tokens of the runs at each sample count
    mean: np.ndarray
    low: np.ndarray
    high: np.ndarray
    n: int
    ends: tuple[int, ...] = ()  # indices of points where a run's records end, the last aside


def group_band(
    group: RunGroup, dataset: str | None, metric: str, band: str = "std", window: int = 1
) -> Band | None:
    """Mean and band over the group's runs, each carried to the group's end (module doc).

    `dataset` None means the train records. Each run's values are first smoothed by a
    trailing mean of `window` records. None when some run has no value for the metric there.
    """
    if band not in BANDS:
        raise UsageError(f"unknown --band {band!r}; choose one of {', '.join(BANDS)}")
    per_run = []
    for run in group.runs:
        records = run.train if dataset is None else run.validation.get(dataset, [])
        points = _points(records, metric)
        if not points:
            return None
        samples, tokens, values = (np.array(column, dtype=np.float64) for column in zip(*points))
        per_run.append((samples, tokens, moving_average(values, window)))
    grid = np.unique(np.concatenate([samples for samples, _, _ in per_run]))
    # np.interp holds the first and last values outside a run's samples.
    values = np.array([np.interp(grid, s, v) for s, _, v in per_run])  # (runs, points)
    tokens = np.array([np.interp(grid, s, t) for s, t, _ in per_run])
    reached = np.array([grid <= s[-1] for s, _, _ in per_run])  # (runs, points)
    mean_tokens = (tokens * reached).sum(axis=0) / reached.sum(axis=0)
    last = {int(np.searchsorted(grid, s[-1])) for s, _, _ in per_run} - {len(grid) - 1}
    mean = values.mean(axis=0)
    if band == "minmax":
        low, high = values.min(axis=0), values.max(axis=0)
    else:
        spread = values.std(axis=0, ddof=1) if len(values) > 1 else np.zeros_like(mean)
        low, high = mean - spread, mean + spread
    return Band(
        group.label, dataset, grid, mean_tokens, mean, low, high, len(values), tuple(sorted(last))
    )


def _points(records: Sequence[dict[str, Any]], metric: str) -> list[tuple[float, float, float]]:
    points = {}
    for record in records:
        value = record.get(metric)
        # Step 0 (no tokens yet) included: the plots' x axis is linear near 0, log beyond.
        if is_number(value) and math.isfinite(value) and record["tokens"] >= 0:
            points[float(record["samples"])] = (float(record["tokens"]), float(value))
    return [(s, t, v) for s, (t, v) in sorted(points.items())]


def is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _flatten(fields: dict[str, Any]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for name, value in fields.items():
        if isinstance(value, dict):
            flat.update({f"{name}.{k}": v for k, v in value.items()})
        else:
            flat[name] = value
    return flat


def _same(fields: dict[str, dict[str, Any]], name: str) -> bool:
    if not all(name in f for f in fields.values()):
        return False
    return len({orjson.dumps(f[name], option=orjson.OPT_SORT_KEYS) for f in fields.values()}) == 1


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return orjson.dumps(value).decode()
