"""Final validation losses of groups of runs, and Welch's t-test between two groups (--compare).

numpy only (no torch, no matplotlib). Definitions, so results can be checked by hand:

- **Final validation loss.** Each run's last validation record with a finite loss, per
  validation set; a group reports mean, sample std (n - 1; empty when n = 1), min, max, n.
- **Welch's t-test** between two groups' final losses: t = (m1 - m2) / sqrt(v1/n1 + v2/n2),
  Welch–Satterthwaite degrees of freedom, two-sided p = I_{df/(df+t²)}(df/2, 1/2) with the
  regularized incomplete beta function I evaluated by its continued fraction.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from lmplay.errors import UsageError
from lmplay.stats.aggregate import RunGroup, is_number


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


def _last_loss(records: Sequence[dict[str, Any]]) -> float | None:
    for record in reversed(records):
        value = record.get("loss")
        if is_number(value) and math.isfinite(value):
            return float(value)
    return None
