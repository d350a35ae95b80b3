"""Existing stats files as TensorBoard event files (`lmp_plotstats --to-tensorboard DIR`).

Each run gets a folder under DIR, named after the run, written by the same sink that
`--log-to tensorboard` uses, so an old run or a whole grid is browsed the same way as a live
one: `tensorboard --logdir DIR`. Converting again replaces what a reader shows (each
conversion starts with a purge at step 0).
"""

from __future__ import annotations

import re
from pathlib import Path

from lmplay.stats.runs import (
    RunStats,
    generation_line,
    stop_line,
    train_line,
    validation_line,
)
from lmplay.stats.trackers import TensorBoardSink, TrackedRun, flat_hparams

_UNSAFE = re.compile(r"[\\/\x00]|^\.+$")  # what cannot be a folder name


def write_tensorboard(runs: list[RunStats], out_dir: Path) -> list[Path]:
    """One event folder per run under `out_dir`; returns the folders."""
    folders: list[Path] = []
    for run in runs:
        folder = out_dir / _unique(_UNSAFE.sub("_", run.run) or "run", folders, out_dir)
        sink = TensorBoardSink(folder)
        sink.start(TrackedRun(run.run, flat_hparams(run.meta), first_step=0))
        lines = [train_line(record) for record in run.train]
        lines += [validation_line(name, r) for name, recs in run.validation.items() for r in recs]
        lines += [stop_line(record) for record in run.stops]
        lines += [generation_line(record) for record in run.generations]
        for line in lines:
            sink.log(line)
        sink.close(0)
        folders.append(folder)
    return folders


def _unique(name: str, taken: list[Path], out_dir: Path) -> str:
    # Two stats files of one run name (two grids, two copies) stay two runs in TensorBoard.
    candidate, number = name, 1
    while out_dir / candidate in taken:
        number += 1
        candidate = f"{name}-{number}"
    return candidate
