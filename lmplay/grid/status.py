"""What each cell of a grid is doing: its record file, its state, and the status table.

A cell's folder holds its checkpoint and stats (written by `lmp_trainer`), `train.log` (the
process's stdout and stderr) and `cell.json`, the record of the last attempt, written
atomically: `{"state", "exit_code", "error", "pid", "device", "args"}`. The queue writes it
`running` when the cell starts; the cell's own process (`lmplay.cli.grid_cell`) writes how it
ended, so a cell that outlives a killed queue still records that it finished.

States:
- `pending`: never started, or stopped before its first checkpoint;
- `running`: the record names a live process;
- `interrupted`: a checkpoint exists but the plan was not finished (rerun to resume);
- `finished`: the last attempt exited 0 (the plan is done or `--max-steps` was reached);
- `failed`: the last attempt exited with another code; the record keeps it and the last
  `error:` line of the log.
"""

from __future__ import annotations

import signal
import socket
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from lmplay.atomic import atomic_write_bytes
from lmplay.errors import UsageError
from lmplay.grid.spec import Cell, GridSpec
from lmplay.processes import process_alive
from lmplay.run_files import runs_in
from lmplay.stats.runs import RunStats, find_stats_files, load_stats

RECORD_NAME = "cell.json"
LOG_NAME = "train.log"
STATES = ("pending", "running", "interrupted", "finished", "failed")
# Saved and stopped on request: SIGINT, SIGTERM, SIGUSR2 (Slurm's preemption warning).
STOPPED_CODES = (130, 143, 140, -signal.SIGINT, -signal.SIGTERM, -signal.SIGUSR2)
_ERROR_PREFIX = "error:"


def cell_folder(spec: GridSpec, cell: Cell) -> Path:
    return spec.out_root / cell.name


def write_record(folder: Path, **record: Any) -> None:
    atomic_write_bytes(folder / RECORD_NAME, orjson.dumps(record, option=orjson.OPT_INDENT_2))


def write_final_record(
    folder: Path, code: int, log_offset: int, args: list[str], stopped: bool = False
) -> str:
    """Record how an attempt that exited with `code` ended; its state. `stopped`: the queue
    asked it to stop (any exit code then means interrupted, not failed)."""
    device = args[args.index("--device") + 1] if "--device" in args[:-1] else None
    record = {"pid": None, "device": device, "args": args, "exit_code": code}
    if code == 0:
        write_record(folder, state="finished", error=None, **record)
        return "finished"
    if stopped or code in STOPPED_CODES:
        state = "interrupted" if has_checkpoint(folder) else "pending"
        write_record(folder, state=state, error=None, **record)
        return state
    error = last_error_line(folder / LOG_NAME, log_offset)
    write_record(folder, state="failed", error=error, **record)
    return "failed"


def last_error_line(log: Path, offset: int = 0) -> str:
    """The last `error:` line the attempt wrote after `offset`, else its last line (a traceback)."""
    try:
        with open(log, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ""
    # tqdm redraws with carriage returns; the visible line is the text after the last one.
    lines = [line.rsplit("\r", 1)[-1].strip() for line in text.splitlines()]
    lines = [line for line in lines if line]
    errors = [line for line in lines if line.startswith(_ERROR_PREFIX)]
    return (errors or lines or [""])[-1][:300]


def read_record(folder: Path) -> dict[str, Any]:
    """The last attempt's record, or `{}` when there is none or it cannot be read."""
    try:
        record = orjson.loads((folder / RECORD_NAME).read_bytes())
    except (OSError, orjson.JSONDecodeError):
        return {}
    return record if isinstance(record, dict) else {}


def has_checkpoint(folder: Path) -> bool:
    """Whether a run in the cell's folder has saved (its checkpoint, not a copy of one)."""
    return bool(runs_in(folder))


def cell_state(folder: Path) -> str:
    record = read_record(folder)
    state = record.get("state")
    if state in ("finished", "failed"):
        return state
    if state == "running" and (_elsewhere(record) or process_alive(record.get("pid"))):
        return "running"
    return "interrupted" if has_checkpoint(folder) else "pending"


@dataclass(frozen=True)
class CellStatus:
    """One row of the status table."""

    cell: str
    state: str
    step: int | None = None
    tokens: int | None = None
    train_loss: float | None = None
    validation_loss: dict[str, float | None] | None = None
    note: str = ""


def cell_status(spec: GridSpec, cell: Cell) -> CellStatus:
    folder = cell_folder(spec, cell)
    state = cell_state(folder)
    record = read_record(folder)
    note = ""
    if state == "failed":
        note = f"exit {record.get('exit_code')}: {record.get('error') or 'no error line'}"
    stats = _stats(folder)
    if isinstance(stats, str):
        return CellStatus(cell.name, state, note=note or stats)
    if stats is None:
        return CellStatus(cell.name, state, note=note)
    last_train = stats.train[-1] if stats.train else {}
    validation = {name: recs[-1].get("loss") for name, recs in stats.validation.items() if recs}
    return CellStatus(
        cell=cell.name,
        state=state,
        step=_number(last_train.get("steps")),
        tokens=stats.tokens,
        train_loss=last_train.get("loss"),
        validation_loss=validation,
        note=note or stop_reason(stats),
    )


def stop_reason(stats: RunStats) -> str:
    """Why the run stopped, where the stats file records it (older files do not)."""
    value = getattr(stats, "stop_reason", None) or stats.meta.get("stop_reason")
    return value if isinstance(value, str) else ""


def grid_status(spec: GridSpec) -> list[CellStatus]:
    return [cell_status(spec, cell) for cell in spec.cells]


def format_table(rows: list[CellStatus]) -> str:
    header = ("cell", "state", "step", "tokens", "train loss", "validation loss", "stop / error")
    lines = [header] + [
        (
            row.cell,
            row.state,
            "" if row.step is None else str(row.step),
            "" if row.tokens is None else f"{row.tokens:,}",
            _loss(row.train_loss),
            _validation(row.validation_loss),
            row.note,
        )
        for row in rows
    ]
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    text = ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    counts = {state: sum(row.state == state for row in rows) for state in STATES}
    summary = ", ".join(f"{n} {state}" for state, n in counts.items() if n)
    return "\n".join([*text, f"{len(rows)} cells: {summary}"])


def _stats(folder: Path) -> RunStats | str | None:
    """The stats of the cell's run: beside its checkpoint, else any stats file in the folder
    (a run stopped before its first checkpoint)."""
    files = [run.stats for run in runs_in(folder) if run.stats.is_file()]
    if not files and folder.is_dir():
        files = find_stats_files([folder])[0]
    if not files:
        return None
    try:
        return load_stats(files[0])
    except UsageError as e:
        return f"stats unreadable: {e}"


def _validation(losses: dict[str, float | None] | None) -> str:
    if not losses:
        return ""
    if len(losses) == 1:
        return _loss(next(iter(losses.values())))
    return " ".join(f"{name}={_loss(loss)}" for name, loss in sorted(losses.items()))


def _loss(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, (int, float)) else ""


def _number(value: Any) -> int | None:
    return int(value) if isinstance(value, (int, float)) else None


def _elsewhere(record: dict[str, Any]) -> bool:
    """A cell running on another machine (a Slurm node): its process cannot be checked here."""
    return record.get("host") not in (None, socket.gethostname())
