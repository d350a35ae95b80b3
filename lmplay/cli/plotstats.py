"""lmp_plotstats: plot and compare runs from their stats files (no torch needed).

Reads `*.stats.jsonl` (and the `*.stats.json` files of older lmplay versions).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from collections.abc import Sequence
from pathlib import Path

from lmplay.cli import plain_warnings
from lmplay.cli.flags import build_parser as build_flag_parser
from lmplay.cli.flags import parse_flags
from lmplay.config import DEFAULT_OUT_DIR, PLOT_SECTIONS, PlotConfig
from lmplay.errors import UsageError
from lmplay.stats.aggregate import find_group, group_runs
from lmplay.stats.compare import compare_groups, final_losses
from lmplay.stats.curriculum_plot import parse_plots, plot_curriculum
from lmplay.stats.plot import PlotOptions, plot_groups, plot_runs
from lmplay.stats.runs import STATS_SUFFIXES, RunStats, find_stats_files, load_stats
from lmplay.stats.summary import RECORDS_CSV, format_summary, write_records_csv, write_summary
from lmplay.train.preflight import check_writable_folder

DEFAULT_LOCATION = Path(DEFAULT_OUT_DIR)
_PATTERNS = " or ".join(f"*{suffix}" for suffix in STATS_SUFFIXES)


def build_parser() -> argparse.ArgumentParser:
    parser = build_flag_parser(
        "lmp_plotstats",
        "Plot validation (and optionally train) loss and accuracy of runs against tokens, and "
        "each run's difference to a target run.",
        PLOT_SECTIONS,
    )
    parser.add_argument(
        "locations",
        nargs="*",
        type=Path,
        default=[DEFAULT_LOCATION],
        help=f"stats files, or folders searched recursively for {_PATTERNS} "
        f"(default: {DEFAULT_LOCATION})",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    plain_warnings.install()
    try:
        args, values = parse_flags(build_parser(), PLOT_SECTIONS, argv)
        cfg = PlotConfig(**values["plot"])
        # What the line plots draw; the output folder and the seed-group options are used here.
        drawn = {f.name for f in dataclasses.fields(PlotOptions)}
        options = PlotOptions(**{k: v for k, v in values["plot"].items() if k in drawn})
        runs = load_runs(args.locations)
        if cfg.to_tensorboard:
            return _to_tensorboard(runs, Path(cfg.to_tensorboard))
        out_dir = Path(cfg.out_dir) if cfg.out_dir else default_out_dir(args.locations, runs)
        _check_out_dir(out_dir, given=cfg.out_dir is not None)
        groups = group_runs([r for r in runs if r.tokens >= options.min_tokens] or runs)
        table = final_losses(groups)
        tests = []
        if cfg.compare:
            a, b = (find_group(groups, name) for name in cfg.compare)
            tests = compare_groups(table, a, b)
        written = plot_runs(runs, out_dir, options)
        if options.plot:
            written += plot_curriculum(runs, out_dir, options, parse_plots(options.plot))
        if cfg.group_seeds or cfg.band or cfg.compare:
            print(format_summary(table, tests))
            written += write_summary(out_dir, groups, table, tests)
            written += plot_groups(groups, out_dir, options, cfg.band or "std")
        if cfg.csv:
            written.append(write_records_csv(out_dir / RECORDS_CSV, groups))
    except UsageError as e:
        print(f"error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    for path in written:
        print(path)
    return 0


def _check_out_dir(out_dir: Path, given: bool) -> None:
    """The folder plots go to can be written (created if missing); `given`: by --out-dir."""
    flag = "--out-dir" if given else "plots' folder (the default --out-dir)"
    if out_dir.exists() and not out_dir.is_dir():
        raise UsageError(f"{flag} {out_dir}: is a file, not a folder")
    check_writable_folder(out_dir, "word_accuracy_diff.svg", flag)


def _to_tensorboard(runs: list[RunStats], out_dir: Path) -> int:
    from lmplay.stats.to_tensorboard import write_tensorboard
    from lmplay.stats.trackers import check_installed

    check_installed(("tensorboard",), "--to-tensorboard")
    _check_out_dir(out_dir, given=True)
    for folder in write_tensorboard(runs, out_dir):
        print(folder)
    return 0


def load_runs(locations: list[Path]) -> list[RunStats]:
    """Every readable stats file in `locations`; unreadable ones are skipped with a warning.

    Raises `UsageError` when nothing is found or no file can be read.
    """
    files, missing = find_stats_files(locations)
    if not files:
        where = ", ".join(f"{p}" + (" (missing)" if p in missing else "") for p in locations)
        raise UsageError(f"no {_PATTERNS} files found in: {where}")
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
