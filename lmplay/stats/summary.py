"""The files `lmp_plotstats` writes beside its plots: the final-loss summary (`summary.csv`,
`summary.json`, and the same as aligned text) and every record as one table (`records.csv`).
"""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from lmplay.stats.aggregate import RunGroup, is_number
from lmplay.stats.compare import FinalLoss, WelchResult

SUMMARY_CSV = "summary.csv"
SUMMARY_JSON = "summary.json"
RECORDS_CSV = "records.csv"
_COUNTERS = ("samples", "tokens", "steps")


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
        {k for row in rows for k, v in row.items() if is_number(v)}
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
