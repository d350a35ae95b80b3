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
from lmplay.cli.flags import build_parser as build_flag_parser
from lmplay.cli.flags import parse_flags
from lmplay.config import GRID_SECTIONS, GridConfig
from lmplay.errors import UsageError
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
    parser = build_flag_parser(
        "lmp_grid",
        "Run a grid of lmp_trainer runs (base flags × crossed lists) over a queue of devices; "
        "rerun to resume.",
        GRID_SECTIONS,
    )
    parser.add_argument("grid", type=Path, help="grid file (JSON: base, cross, runs)")
    return parser


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
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the queue installs its handlers: nothing started yet
        print("interrupted before any cell started", file=sys.stderr)
        return EXIT_INTERRUPTED


def _main(argv: Sequence[str] | None) -> int:
    try:
        args, values = parse_flags(build_parser(), GRID_SECTIONS, argv)
        cfg = GridConfig(**values["grid"])
        slots = device_slots(cfg.devices, cfg.jobs)
        spec = load_grid(args.grid, trainer_flags())
        if cfg.out_root is not None:
            spec = dataclasses.replace(spec, out_root=Path(cfg.out_root))
        check_cells(spec)
        check_out_root(spec, cfg.status or cfg.dry_run)
        if cfg.status:
            return _status(spec)
        hint = _status_hint(args.grid, cfg)
        if cfg.executor == "slurm" or (cfg.executor == "submitit-local" and not cfg.dry_run):
            if cfg.executor == "submitit-local":
                check_devices(slots[:1])
            if cfg.dry_run:
                return _submitit_executor(cfg, spec, slots, hint)
            with grid_lock(spec):
                return _submitit_executor(cfg, spec, slots, hint)
        if cfg.dry_run:
            for cell in spec.cells:
                folder = spec.out_root / cell.name
                print(" ".join(["lmp_trainer", *cell.args(), "--out-dir", str(folder)]))
            return 0
        check_devices(slots)
        with grid_lock(spec):
            return GridQueue(spec, slots, env=_cell_env(spec, slots), status_hint=hint).run()
    except UsageError as error:
        print(f"error: {' '.join(str(error).split())}", file=sys.stderr)
        return EXIT_USAGE


def _status(spec: GridSpec) -> int:
    rows = grid_status(spec)
    print(format_table(rows))
    all_done = all(row.state == "finished" for row in rows)
    return EXIT_ALL_FINISHED if all_done else EXIT_SOME_NOT_FINISHED


def _status_hint(grid: Path, cfg: GridConfig) -> str:
    """The command that shows this grid's table: every option that chose the grid's folder."""
    words = ["lmp_grid", str(grid), "--status"]
    if cfg.out_root is not None:
        words += ["--out-root", str(Path(cfg.out_root))]
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


def _submitit_executor(cfg: GridConfig, spec: GridSpec, slots: list[str], hint: str) -> int:
    from lmplay.grid import executors

    # Every cell starts at once under submitit-local: on the CPU they share its cores.
    cores = _cell_env(spec, slots[:1] * len(spec.cells)).get("OMP_NUM_THREADS")
    env = {} if cores is None or cfg.executor != "submitit-local" else {"OMP_NUM_THREADS": cores}
    options = executors.slurm_options(cfg)
    return executors.run_executor(
        cfg.executor, spec, options, slots[0], env, cfg.dry_run, _say, hint
    )


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
