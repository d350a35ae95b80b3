"""Runs that differ only by seed, taken together: mean curves with bands, final-loss tables, tests.

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
- **Final validation loss.** Each run's last validation record with a finite loss, per
  validation set; a group reports mean, sample std (n - 1; empty when n = 1), min, max, n.
- **Welch's t-test** between two groups' final losses: t = (m1 - m2) / sqrt(v1/n1 + v2/n2),
  Welch–Satterthwaite degrees of freedom, two-sided p = I_{df/(df+t²)}(df/2, 1/2) with the
  regularized incomplete beta function I evaluated by its continued fraction.
"""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import orjson

from lmplay.config import PLOT_BANDS
from lmplay.errors import UsageError
from lmplay.stats.runs import RunStats
from lmplay.stats.series import moving_average

BANDS = PLOT_BANDS
SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
RECORDS_CSV = "records.csv"
_COUNTERS = ("samples", "tokens", "steps")


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


@dataclass(frozen=True)
class FinalLoss:
    """Final validation loss of one group on one set, over its runs."""

    group: str
    dataset: str
    values: tuple[float, ...]

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float | None:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else None

    def to_json(self) -> dict[str, Any]:
        return {
            "group": self.group,
            "dataset": self.dataset,
            "n": self.n,
            "mean": self.mean,
            "std": self.std,
            "min": min(self.values),
            "max": max(self.values),
            "values": list(self.values),
        }


def final_losses(groups: Sequence[RunGroup]) -> list[FinalLoss]:
    """One entry per group and validation set that some run of the group scored."""
    table = []
    for group in groups:
        sets = sorted({name for run in group.runs for name in run.validation})
        for name in sets:
            values = [_last_loss(run.validation.get(name, [])) for run in group.runs]
            finite = tuple(v for v in values if v is not None)
            if finite:
                table.append(FinalLoss(group.label, name, finite))
    return table


@dataclass(frozen=True)
class WelchResult:
    dataset: str
    a: FinalLoss
    b: FinalLoss
    t: float | None
    df: float | None
    p: float | None
    note: str = ""

    @property
    def lower(self) -> str | None:
        """The group with the lower mean final loss (None when they are equal)."""
        if self.a.mean == self.b.mean:
            return None
        return self.a.group if self.a.mean < self.b.mean else self.b.group

    def to_json(self) -> dict[str, Any]:
        return {
            "dataset": self.dataset,
            "a": self.a.group,
            "b": self.b.group,
            "mean_difference": self.a.mean - self.b.mean,  # A - B
            "difference_of": "a - b",
            "lower": self.lower,
            "t": self.t,
            "df": self.df,
            "p": self.p,
            "note": self.note,
        }


def welch_t_test(a: Sequence[float], b: Sequence[float]) -> tuple[float, float, float]:
    """(t, degrees of freedom, two-sided p) of Welch's unequal-variance t-test.

    Needs at least two values on each side and some spread; raises ValueError otherwise.
    """
    n1, n2 = len(a), len(b)
    if n1 < 2 or n2 < 2:
        raise ValueError(f"Welch's t-test needs 2 values per group, got {n1} and {n2}")
    m1, m2 = float(np.mean(a)), float(np.mean(b))
    q1, q2 = float(np.var(a, ddof=1)) / n1, float(np.var(b, ddof=1)) / n2
    if q1 + q2 == 0:
        raise ValueError("Welch's t-test is undefined when both groups have zero variance")
    t = (m1 - m2) / math.sqrt(q1 + q2)
    df = (q1 + q2) ** 2 / (q1**2 / (n1 - 1) + q2**2 / (n2 - 1))
    p = regularized_incomplete_beta(df / 2, 0.5, df / (df + t * t))
    return t, df, min(1.0, max(0.0, p))


def compare_groups(table: Sequence[FinalLoss], a: RunGroup, b: RunGroup) -> list[WelchResult]:
    """Welch's t-test of `a` against `b` on every validation set both have."""
    rows_a = {f.dataset: f for f in table if f.group == a.label}
    rows_b = {f.dataset: f for f in table if f.group == b.label}
    results = []
    for name in sorted(set(rows_a) & set(rows_b)):
        fa, fb = rows_a[name], rows_b[name]
        try:
            t, df, p = welch_t_test(fa.values, fb.values)
        except ValueError as e:
            results.append(WelchResult(name, fa, fb, None, None, None, str(e)))
            continue
        results.append(WelchResult(name, fa, fb, t, df, p))
    if not results:
        raise UsageError(f"--compare: groups {a.label!r} and {b.label!r} share no validation set")
    return results


def regularized_incomplete_beta(a: float, b: float, x: float) -> float:
    """I_x(a, b), by the continued fraction of Numerical Recipes (`betai`/`betacf`)."""
    if not 0.0 <= x <= 1.0:
        raise ValueError(f"x must be in [0, 1], got {x}")
    if x in (0.0, 1.0):
        return x
    log_front = (
        math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x)
    )
    # The fraction converges fast for x < (a + 1) / (a + b + 2); use the symmetry otherwise.
    if x < (a + 1) / (a + b + 2):
        return math.exp(log_front) * _beta_fraction(a, b, x) / a
    return 1.0 - math.exp(log_front) * _beta_fraction(b, a, 1.0 - x) / b


def _beta_fraction(a: float, b: float, x: float, *, eps: float = 1e-15) -> float:
    tiny = 1e-300
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 10_000):
        m2 = 2 * m
        for numerator in (m * (b - m) * x / ((qam + m2) * (a + m2)),
                          -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):  # fmt: skip
            d = 1.0 + numerator * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + numerator / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            return h
    raise ArithmeticError(f"incomplete beta fraction did not converge (a={a}, b={b}, x={x})")


def format_summary(table: Sequence[FinalLoss], tests: Sequence[WelchResult] = ()) -> str:
    """The summary as aligned text: one line per group and set, then the tests."""
    rows = [("group", "validation set", "final loss (mean ± std)", "n")]
    for f in table:
        spread = "" if f.std is None else f" ± {f.std:.4f}"
        rows.append((f.group, f.dataset, f"{f.mean:.4f}{spread}", str(f.n)))
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(v.ljust(w) for v, w in zip(r, widths)).rstrip() for r in rows]
    for test in tests:
        head = f"Welch's t-test on {test.dataset}: A={test.a.group} vs B={test.b.group}: "
        if test.p is None:
            lines.append(head + test.note)
            continue
        diff = test.a.mean - test.b.mean
        lower = "equal means" if test.lower is None else f"{test.lower} is lower"
        lines.append(head + f"difference A - B {diff:+.4f} ({lower}), t={test.t:.3f}, "
                     f"df={test.df:.2f}, p={test.p:.4g}")  # fmt: skip
    return "\n".join(lines)


def write_summary(
    out_dir: Path,
    groups: Sequence[RunGroup],
    table: Sequence[FinalLoss],
    tests: Sequence[WelchResult] = (),
) -> list[Path]:
    """`summary.csv` (one row per group and set) and `summary.json` (also groups and tests)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path = out_dir / SUMMARY_CSV
    with open(csv_path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["group", "dataset", "n", "mean", "std", "min", "max"])
        for row in (entry.to_json() for entry in table):
            writer.writerow([row[k] if row[k] is not None else "" for k in
                             ("group", "dataset", "n", "mean", "std", "min", "max")])  # fmt: skip
    doc = {
        "format": "lmplay-summary",
        "version": 1,
        "groups": [
            {"label": g.label, "seeds": g.seeds, "runs": [str(r.path) for r in g.runs]}
            for g in groups
        ],
        "final_validation_loss": [entry.to_json() for entry in table],
        "welch": [test.to_json() for test in tests],
    }
    json_path = out_dir / SUMMARY_JSON
    json_path.write_bytes(orjson.dumps(doc, option=orjson.OPT_INDENT_2))
    return [csv_path, json_path]


def write_records_csv(path: Path, groups: Sequence[RunGroup]) -> Path:
    """Every record of every run as one tidy table: one row per record.

    Columns: run, group, seed, split (train/validation), set (validation set; empty for train),
    samples, tokens, steps, stage (train records name theirs), then every numeric metric any
    record holds, sorted (empty where a record lacks it).
    """
    rows: list[dict[str, Any]] = []
    for group in groups:
        for run in group.runs:
            base = {"run": run.run, "group": group.label, "seed": run.meta.get("seed")}
            for record in run.train:
                rows.append({**base, "split": "train", "set": "", **record})
            for name, records in sorted(run.validation.items()):
                for record in records:
                    rows.append({**base, "split": "validation", "set": name, **record})
    metrics = sorted(
        {k for row in rows for k, v in row.items() if _is_number(v)}
        - {"seed", *_COUNTERS}
    )  # fmt: skip
    columns = ["run", "group", "seed", "split", "set", *_COUNTERS, "stage", *metrics]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(columns)
        for row in rows:
            writer.writerow(["" if row.get(c) is None else row[c] for c in columns])
    return path


def _points(records: Sequence[dict[str, Any]], metric: str) -> list[tuple[float, float, float]]:
    points = {}
    for record in records:
        value = record.get(metric)
        # Step 0 (no tokens yet) included: the plots' x axis is linear near 0, log beyond.
        if _is_number(value) and math.isfinite(value) and record["tokens"] >= 0:
            points[float(record["samples"])] = (float(record["tokens"]), float(value))
    return [(s, t, v) for s, (t, v) in sorted(points.items())]


def _last_loss(records: Sequence[dict[str, Any]]) -> float | None:
    for record in reversed(records):
        value = record.get("loss")
        if _is_number(value) and math.isfinite(value):
            return float(value)
    return None


def _is_number(value: Any) -> bool:
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
