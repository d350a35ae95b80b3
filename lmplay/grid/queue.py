"""Run a grid's cells as `lmp_trainer` processes through a queue of device slots.

Each slot is one device (`cuda:0`, `cpu`, ...); `--jobs N` gives every device N slots. A free
slot takes the next cell that is not finished and starts
`python -m lmplay.cli.trainer <cell flags> --out-dir <root>/<cell> --device <slot>`, with the
process's stdout and stderr appended to the cell's `train.log`. A cell that is already finished
is skipped; an interrupted one resumes, since `lmp_trainer` resumes when rerun.

SIGINT or SIGTERM stops the queue: no new cell starts, each running cell gets one SIGINT (so it
finishes its step and saves, then exits 130) and the queue exits 130 when all have ended. Cells
run in their own session, so a Ctrl+C in the terminal reaches them only through the queue, once.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from types import FrameType

from lmplay.grid.spec import Cell, GridSpec
from lmplay.grid.status import (
    LOG_NAME,
    cell_folder,
    cell_state,
    read_record,
    write_final_record,
    write_record,
)

EXIT_ALL_FINISHED = 0
EXIT_SOME_NOT_FINISHED = 1
EXIT_INTERRUPTED = 130
POLL_SECONDS = 0.1


@dataclass
class _Running:
    cell: Cell
    slot: str
    process: subprocess.Popen
    log_offset: int
    started: float
    signalled: bool = False


class GridQueue:
    """Runs the unfinished cells of `spec` over `slots`; `run()` returns the exit code."""

    def __init__(
        self,
        spec: GridSpec,
        slots: list[str],
        *,
        env: dict[str, str] | None = None,
        say: Callable[[str], None] | None = None,
        status_hint: str | None = None,
    ) -> None:
        self.spec = spec
        self.slots = slots
        self.env = dict(os.environ if env is None else env)
        self.say = say or (lambda line: print(line, flush=True))
        self.stop_signal: int | None = None
        self.running: dict[int, _Running] = {}
        self.index = {cell.name: i + 1 for i, cell in enumerate(spec.cells)}
        self.status_hint = status_hint or f"lmp_grid {spec.source} --status"

    def run(self) -> int:
        todo = []
        for cell in self.spec.cells:
            if cell_state(cell_folder(self.spec, cell)) == "finished":
                self.say(f"{self._tag(cell)} skip {cell.name}: already finished")
            else:
                todo.append(cell)
        previous = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            while self.running or (todo and self.stop_signal is None):
                if self.stop_signal is not None:
                    self._forward_stop()
                for slot_index, slot in enumerate(self.slots):
                    if todo and self.stop_signal is None and slot_index not in self.running:
                        self.running[slot_index] = self._start(todo.pop(0), slot)
                self._reap()
                time.sleep(POLL_SECONDS)
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._summary()

    def _on_signal(self, signum: int, frame: FrameType | None) -> None:
        if self.stop_signal is None:
            self.stop_signal = signum  # the loop forwards it; a handler must stay minimal

    def _forward_stop(self) -> None:
        for job in self.running.values():
            if not job.signalled and job.process.poll() is None:
                job.process.send_signal(signal.SIGINT)
                job.signalled = True

    def _start(self, cell: Cell, slot: str) -> _Running:
        folder = cell_folder(self.spec, cell)
        folder.mkdir(parents=True, exist_ok=True)
        log_path = folder / LOG_NAME
        args = cell_trainer_args(self.spec, cell, slot)
        with open(log_path, "ab") as log:
            offset = log.tell()
            log.write(f"$ lmp_trainer {' '.join(args)}\n".encode())
            log.flush()
            # The cell's process runs lmp_trainer, then records how it ended (even without us).
            cell_main = [sys.executable, "-m", "lmplay.cli.grid_cell", str(folder), str(offset)]
            command = [*cell_main, "--", *args]
            process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,  # Ctrl+C reaches cells only through the queue, once
            )
        record = {"state": "running", "pid": process.pid, "device": slot, "args": args}
        write_record(folder, **record, exit_code=None, error=None)
        self.say(f"{self._tag(cell)} start {cell.name} on {slot} (log: {log_path})")
        return _Running(cell, slot, process, offset, time.monotonic())

    def _reap(self) -> None:
        for slot_index, job in list(self.running.items()):
            code = job.process.poll()
            if code is None:
                continue
            del self.running[slot_index]
            self._finish(job, code)

    def _finish(self, job: _Running, code: int) -> None:
        folder = cell_folder(self.spec, job.cell)
        seconds = time.monotonic() - job.started
        tag = self._tag(job.cell)
        record = read_record(folder)
        if record.get("state") == "running" or record.get("exit_code") != code:
            # The cell died before it could record its end (killed, or the interpreter crashed).
            args = list(job.process.args[job.process.args.index("--") + 1 :])
            write_final_record(folder, code, job.log_offset, args, stopped=job.signalled)
            record = read_record(folder)
        state = record.get("state")
        if state == "finished":
            self.say(f"{tag} finished {job.cell.name} in {seconds:.1f} s")
        elif state in ("interrupted", "pending"):
            self.say(f"{tag} {state} {job.cell.name} (exit {code}); rerun to resume")
        else:
            self.say(f"{tag} failed {job.cell.name} (exit {code}): {record.get('error')}")

    def _summary(self) -> int:
        states = [cell_state(cell_folder(self.spec, c)) for c in self.spec.cells]
        done = states.count("finished")
        self.say(f"{done}/{len(states)} cells finished; status: {self.status_hint}")
        if self.stop_signal is not None:
            self.say(f"stopped by {signal.Signals(self.stop_signal).name}; rerun to resume")
            return EXIT_INTERRUPTED
        return EXIT_ALL_FINISHED if done == len(states) else EXIT_SOME_NOT_FINISHED

    def _tag(self, cell: Cell) -> str:
        return f"[{self.index[cell.name]}/{len(self.spec.cells)}]"


def cell_trainer_args(spec: GridSpec, cell: Cell, device: str) -> list[str]:
    """The `lmp_trainer` arguments of a cell, whichever executor runs it."""
    return [*cell.args(), "--out-dir", str(cell_folder(spec, cell)), "--device", device]


def device_slots(devices: str, jobs: int) -> list[str]:
    """`"cuda:0,cuda:1"` with 2 jobs -> one slot per device and job, devices interleaved."""
    names = [d.strip() for d in devices.split(",") if d.strip()]
    return [name for _ in range(jobs) for name in names]
