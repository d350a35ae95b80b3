"""lmp_plotstats: plot and compare runs from their `*.stats.json` files (no torch needed)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lmplay.errors import UsageError
from lmplay.stats.aggregate import (
    BANDS,
    RECORDS_CSV,
    compare_groups,
    final_losses,
    find_group,
    format_summary,
    group_runs,
    write_records_csv,
    write_summary,
)
from lmplay.stats.plot import DEFAULT_WINDOW, OUT_TYPES, PlotOptions, plot_groups, plot_runs
from lmplay.stats.runs import STATS_SUFFIX, RunStats, find_stats_files, load_stats

DEFAULT_LOCATION = Path("out_gpt")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmp_plotstats",
        description="Plot validation (and optionally train) loss and accuracy of runs against "
        "tokens, and each run's difference to a target run.",
    )
    parser.add_argument(
        "locations",
        nargs="*",
        type=Path,
        default=[DEFAULT_LOCATION],
        help=f"stats files, or folders searched recursively for *{STATS_SUFFIX} "
        f"(default: {DEFAULT_LOCATION})",
    )
    parser.add_argument(
        "--out-dir",
        type=Path,
        help="where plots go (default: the first location that is a folder, else the folder "
        "of the first file)",
    )
    parser.add_argument("--out-type", choices=OUT_TYPES, default="png", help="default: png")
    parser.add_argument(
        "--plot-train",
        action="store_true",
        help="also plot train series (train_<metric>.*); they are plotted anyway when no run "
        "has validation records",
    )
    parser.add_argument(
        "--plot-raw", action="store_true", help="draw raw values faintly under smoothed lines"
    )
    parser.add_argument(
        "--average-count",
        type=int,
        metavar="N",
        help=f"moving-average window in records (default: {DEFAULT_WINDOW['train']} for train, "
        f"{DEFAULT_WINDOW['validation']} for validation; 1 for no smoothing)",
    )
    parser.add_argument(
        "--target",
        metavar="NAME",
        help="run that diff plots subtract (default: the run with the most tokens)",
    )
    parser.add_argument(
        "--max-files",
        type=int,
        metavar="N",
        help="plot at most N runs: those with the most tokens (the target is always kept)",
    )
    parser.add_argument(
        "--min-tokens",
        type=int,
        default=0,
        metavar="N",
        help="leave out runs that have seen fewer than N tokens (default: 0)",
    )
    _add_seed_group_options(parser)
    return parser


def _add_seed_group_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("seed groups (runs equal in exp and meta except seed)")
    group.add_argument(
        "--group-seeds",
        action="store_true",
        help="also draw groups_<metric>.* (mean over seeds with a band) and write the final "
        "validation loss per group to summary.csv and summary.json; implied by --band and "
        "--compare",
    )
    group.add_argument(
        "--band",
        choices=BANDS,
        help="band around each group's mean: std (±1 sample standard deviation, the default) "
        "or minmax",
    )
    group.add_argument(
        "--compare",
        nargs=2,
        metavar=("A", "B"),
        help="Welch's t-test of the final validation losses of groups A and B (a group label, "
        "or a part of one that matches only it)",
    )
    group.add_argument(
        "--csv",
        action="store_true",
        help=f"also write {RECORDS_CSV}: every record of every run, one row per record",
    )


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        options = PlotOptions(
            out_type=args.out_type,
            plot_train=args.plot_train,
            plot_raw=args.plot_raw,
            average_count=args.average_count,
            target=args.target,
            max_files=args.max_files,
            min_tokens=args.min_tokens,
        )
        runs = load_runs(args.locations)
        out_dir = args.out_dir or default_out_dir(args.locations, runs)
        groups = group_runs([r for r in runs if r.tokens >= options.min_tokens] or runs)
        table = final_losses(groups)
        tests = []
        if args.compare:
            a, b = (find_group(groups, name) for name in args.compare)
            tests = compare_groups(table, a, b)
        written = plot_runs(runs, out_dir, options)
        if args.group_seeds or args.band or args.compare:
            print(format_summary(table, tests))
            written += write_summary(out_dir, groups, table, tests)
            written += plot_groups(groups, out_dir, options, args.band or "std")
        if args.csv:
            written.append(write_records_csv(out_dir / RECORDS_CSV, groups))
    except UsageError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def load_runs(locations: list[Path]) -> list[RunStats]:
    """Every readable stats file in `locations`; unreadable ones are skipped with a warning.

    Raises `UsageError` when nothing is found or no file can be read.
    """
    files, missing = find_stats_files(locations)
    if not files:
        where = ", ".join(f"{p}" + (" (missing)" if p in missing else "") for p in locations)
        raise UsageError(f"no *{STATS_SUFFIX} files found in: {where}")
    runs: list[RunStats] = []
    problems: list[str] = []
    for path in files:
        try:
            runs.append(load_stats(path))
        except UsageError as e:
            problems.append(str(e))
    if not runs:
        raise UsageError("; ".join(problems))
    for location in missing:
        print(f"warning: {location}: no such file or folder", file=sys.stderr)
    for problem in problems:
        print(f"warning: skipped {problem}", file=sys.stderr)
    return runs


def default_out_dir(locations: list[Path], runs: list[RunStats]) -> Path:
    folders = [p for p in locations if p.is_dir()]
    return folders[0] if folders else runs[0].path.parent


if __name__ == "__main__":
    sys.exit(main())
