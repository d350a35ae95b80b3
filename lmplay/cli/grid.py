"""`lmp_grid`: run every cell of a grid of `lmp_trainer` runs through a queue over devices.

    lmp_grid plans/grid_demo.json                       # every cell, one at a time, on the CPU
    lmp_grid GRID.json --devices cuda:0,cuda:1          # one cell per GPU at a time
    lmp_grid GRID.json --devices cpu --jobs 2           # two cells at once on the CPU
    lmp_grid GRID.json --status                         # the table of cells
    lmp_grid GRID.json --executor slurm --slurm-partition gpu --slurm-gpus-per-task 1

Rerunning the same command skips finished cells and resumes interrupted ones. Exit codes: 0
when every cell is finished, 1 when some cell failed or is not finished, 2 for a bad grid file
or flag, 130 when stopped by Ctrl+C or SIGTERM (every running cell saved first).
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import shlex
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from lmplay.cli import plain_warnings
from lmplay.errors import UsageError
from lmplay.grid.executors import EXECUTORS
from lmplay.grid.queue import (
    EXIT_ALL_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_SOME_NOT_FINISHED,
    GridQueue,
    device_slots,
)
from lmplay.grid.spec import GridSpec, load_grid
from lmplay.grid.status import format_table, grid_status

EXIT_USAGE = 2
GRID_LOCK_NAME = ".lmp_grid.lock"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lmp_grid",
        description="Run a grid of lmp_trainer runs (base flags × crossed lists) over a queue of "
        "devices; rerun to resume.",
    )
    parser.add_argument("grid", type=Path, help="grid file (JSON: base, cross, runs)")
    parser.add_argument(
        "--devices",
        default="cpu",
        help="comma-separated torch devices cells run on, e.g. cuda:0,cuda:1 (default: cpu)",
    )
    parser.add_argument(
        "--jobs",
        type=int,
        default=1,
        metavar="N",
        help="cells run at once on each device (default: 1)",
    )
    parser.add_argument(
        "--out-root",
        type=Path,
        help="folder holding one folder per cell (default: the grid's out_root, else "
        "out_grid/<grid name>)",
    )
    parser.add_argument(
        "--status", action="store_true", help="print the table of cells and exit (runs nothing)"
    )
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="print each cell's lmp_trainer command (the queue adds --device) and exit; with "
        "--executor slurm, the sbatch script first",
    )
    _add_executor_flags(parser)
    return parser


def _add_executor_flags(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group(
        "executors (submitit-local and slurm: pip install 'lmplay[slurm]')"
    )
    group.add_argument(
        "--executor",
        choices=EXECUTORS,
        default="local",
        help="local: the queue over --devices; submitit-local: every unfinished cell at once as "
        "submitit local jobs; slurm: one Slurm job array, submitted without waiting "
        "(default: local)",
    )
    group.add_argument(
        "--slurm-partition", metavar="NAME", help="partition the array is submitted to"
    )
    group.add_argument(
        "--slurm-time",
        metavar="TIME",
        help="time limit of each array task: minutes or [DAYS-]HOURS:MINUTES[:SECONDS]; a task "
        "out of time saves and is requeued (default: 24:00:00)",
    )
    group.add_argument(
        "--slurm-gpus-per-task",
        type=int,
        default=0,
        metavar="N",
        help="GPUs of each cell; more than 1 runs the cell under torchrun (default: 0, the CPU)",
    )
    group.add_argument(
        "--slurm-array-parallelism", type=int, metavar="N", help="array tasks running at once"
    )
    group.add_argument(
        "--slurm-setup",
        action="append",
        default=[],
        metavar="LINE",
        help="a shell line the sbatch script runs before the cell (repeat for more), e.g. "
        "'source .venv/bin/activate'",
    )
    group.add_argument(
        "--slurm-extra",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="any other sbatch option, e.g. account=myproj or constraint=a100 (repeatable)",
    )


def trainer_flags() -> dict[str, bool]:
    """Every `lmp_trainer` flag without dashes -> whether it is a switch (takes no value)."""
    from lmplay.cli.trainer import build_parser as trainer_parser

    flags: dict[str, bool] = {}
    for action in trainer_parser()._actions:
        for option in action.option_strings:
            if option.startswith("--") and option != "--help":
                flags[option[2:]] = action.nargs == 0
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    plain_warnings.install()
    args = build_parser().parse_args(argv)
    try:
        return _main(args)
    except KeyboardInterrupt:  # before the queue installs its handlers: nothing started yet
        print("interrupted before any cell started", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(args: argparse.Namespace) -> int:
    try:
        if args.jobs < 1:
            raise UsageError(f"--jobs {args.jobs} must be at least 1")
        slots = device_slots(args.devices, args.jobs)
        if not slots:
            raise UsageError(f"--devices {args.devices!r} names no device")
        spec = load_grid(args.grid, trainer_flags())
        if args.out_root is not None:
            spec = dataclasses.replace(spec, out_root=args.out_root)
        given = [flag for flag, value in _slurm_flags(args).items() if value]
        if given and args.executor != "slurm":
            raise UsageError(f"{', '.join(given)}: only for --executor slurm")
        check_cells(spec)
        check_out_root(spec, args.status or args.dry_run)
        if args.status:
            return _status(spec)
        if args.executor == "slurm" or (args.executor == "submitit-local" and not args.dry_run):
            if args.executor == "submitit-local":
                check_devices(slots[:1])
            if args.dry_run:
                return _submitit_executor(args, spec, slots)
            with grid_lock(spec):
                return _submitit_executor(args, spec, slots)
        if args.dry_run:
            for cell in spec.cells:
                folder = spec.out_root / cell.name
                print(" ".join(["lmp_trainer", *cell.args(), "--out-dir", str(folder)]))
            return 0
        check_devices(slots)
        with grid_lock(spec):
            hint = _status_hint(args)
            return GridQueue(spec, slots, env=_cell_env(spec, slots), status_hint=hint).run()
    except UsageError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE


def _status(spec: GridSpec) -> int:
    rows = grid_status(spec)
    print(format_table(rows))
    all_done = all(row.state == "finished" for row in rows)
    return EXIT_ALL_FINISHED if all_done else EXIT_SOME_NOT_FINISHED


def _status_hint(args: argparse.Namespace) -> str:
    """The command that shows this grid's table: every option that chose the grid's folder."""
    words = ["lmp_grid", str(args.grid), "--status"]
    if args.out_root is not None:
        words += ["--out-root", str(args.out_root)]
    return shlex.join(words)


def check_cells(spec: GridSpec) -> None:
    """No cell may choose its own checkpoint or folder, also not through a `--config` file:
    it would then read or overwrite another cell's run."""
    from lmplay.cli.flags import config_file_values
    from lmplay.config import SECTIONS

    checked: set[str] = set()
    for cell in spec.cells:
        config = cell.flag("config")
        if not isinstance(config, str) or config in checked:
            continue
        checked.add(config)
        values = config_file_values(Path(config), SECTIONS)
        for dest, flag in (("io.model", "model"), ("io.out_dir", "out-dir")):
            if values.get(dest) is not None:
                raise UsageError(
                    f"cell {cell.name}: its --config {config} sets '{flag}', which lmp_grid sets "
                    "for each cell (so no cell reads or writes another's run); remove it there"
                )


def check_out_root(spec: GridSpec, read_only: bool) -> None:
    """The output root is a folder (or can become one) where every cell's folder fits."""
    from lmplay.train.preflight import check_writable_folder

    root = spec.out_root
    if root.exists() and not root.is_dir():
        raise UsageError(f"--out-root {root}: is a file, not a folder")
    if read_only:
        return
    longest = max((cell.name for cell in spec.cells), key=len)
    check_writable_folder(root, longest, "--out-root")


def check_devices(slots: list[str]) -> None:
    from lmplay.train.preflight import check_device

    for device in dict.fromkeys(slots):
        check_device(device, "--devices")


@contextmanager
def grid_lock(spec: GridSpec) -> Iterator[None]:
    """One `lmp_grid` per grid folder at a time: a second would start the same cells again."""
    from lmplay.train.lock import hold_lock

    spec.out_root.mkdir(parents=True, exist_ok=True)
    with hold_lock(spec.out_root / GRID_LOCK_NAME, f"grid {spec.out_root}", "--out-root"):
        yield


def _submitit_executor(args: argparse.Namespace, spec: GridSpec, slots: list[str]) -> int:
    from lmplay.grid import executors

    # Every cell starts at once under submitit-local: on the CPU they share its cores.
    cores = _cell_env(spec, slots[:1] * len(spec.cells)).get("OMP_NUM_THREADS")
    env = {} if cores is None or args.executor != "submitit-local" else {"OMP_NUM_THREADS": cores}
    options = executors.slurm_options(_slurm_flags(args))
    return executors.run_executor(
        args.executor, spec, options, slots[0], env, args.dry_run, _say, _status_hint(args)
    )


def _slurm_flags(args: argparse.Namespace) -> dict[str, object]:
    return {
        "--slurm-partition": args.slurm_partition,
        "--slurm-time": args.slurm_time,
        "--slurm-gpus-per-task": args.slurm_gpus_per_task,
        "--slurm-array-parallelism": args.slurm_array_parallelism,
        "--slurm-setup": args.slurm_setup,
        "--slurm-extra": args.slurm_extra,
    }


def _say(line: str) -> None:
    print(line, flush=True)


def _cell_env(spec: GridSpec, slots: list[str]) -> dict[str, str]:
    # Cells sharing the CPU would each start one thread per core; split the cores instead.
    env = dict(os.environ)
    cpu_slots = sum(slot == "cpu" for slot in slots)
    if cpu_slots > 1 and "OMP_NUM_THREADS" not in env:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // cpu_slots))
    return env


if __name__ == "__main__":
    sys.exit(main())
