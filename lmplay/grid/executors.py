"""Where a grid's cells run: the local queue, submitit's local executor, or a Slurm job array.

`local` is `GridQueue` (lmplay/grid/queue.py). The other two submit one `CellTask` per
unfinished cell through submitit (`pip install 'lmplay[slurm]'`): `submitit-local` runs them as
local processes and waits; `slurm` submits them as one job array and returns. Either way a task
runs the very `lmp_trainer` command the local queue runs, from the folder `lmp_grid` was started
in, appends to the cell's `train.log` and writes the same `cell.json` record, so
`lmp_grid --status` reads a cluster's cells as it reads local ones (the record names the host,
so a cell running on another machine shows as running).

Preemption and time limits: the array is submitted with `--signal=USR2@120`; on SIGUSR2 the
trainer finishes its step and saves (lmplay/train/signals.py), the task records the cell as
interrupted and submitit requeues the task, which resumes from the checkpoint. A cell of several
GPUs (`--slurm-gpus-per-task N`, N > 1) runs under torchrun inside its task.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from lmplay.config import DEFAULT_SLURM_TIME_MIN, GridConfig
from lmplay.errors import UsageError
from lmplay.grid.queue import (
    EXIT_ALL_FINISHED,
    EXIT_INTERRUPTED,
    EXIT_SOME_NOT_FINISHED,
    cell_trainer_args,
)
from lmplay.grid.spec import Cell, GridSpec
from lmplay.grid.status import (
    LOG_NAME,
    cell_folder,
    cell_state,
    read_record,
    write_final_record,
    write_record,
)

SUBMITIT_FOLDER = ".submitit"  # submitit's pickles and logs, under the grid's out_root
SIGNAL_DELAY_S = 120  # Slurm's USR2 comes this long before the kill: time for a save
SAVE_WAIT_S = 100  # how long a preempted task waits for its trainer to save and exit
LOCAL_TIMEOUT_MIN = 7 * 24 * 60  # submitit-local kills a task after this; cells are not timed


@dataclass(frozen=True)
class SlurmOptions:
    """The `--slurm-*` flags, as submitit's SlurmExecutor parameters."""

    partition: str | None = None
    time_min: int = DEFAULT_SLURM_TIME_MIN
    gpus_per_task: int = 0
    array_parallelism: int | None = None
    setup: tuple[str, ...] = ()
    extra: dict[str, Any] = field(default_factory=dict)

    def parameters(self) -> dict[str, Any]:
        params: dict[str, Any] = {
            "job_name": "lmp_grid",
            "time": self.time_min,
            "signal_delay_s": SIGNAL_DELAY_S,
            "stderr_to_stdout": True,
        }
        optional = {
            "partition": self.partition,
            "gpus_per_task": self.gpus_per_task or None,
            "array_parallelism": self.array_parallelism,
            "setup": list(self.setup) or None,
            "additional_parameters": dict(self.extra) or None,
        }
        return params | {key: value for key, value in optional.items() if value is not None}

    def device(self) -> str:
        return "cuda" if self.gpus_per_task else "cpu"


def slurm_options(cfg: GridConfig) -> SlurmOptions:
    """SlurmOptions from the `--slurm-*` flag values (checked by GridConfig)."""
    return SlurmOptions(
        partition=cfg.slurm_partition,
        time_min=cfg.slurm_time_min(),
        gpus_per_task=cfg.slurm_gpus_per_task,
        array_parallelism=cfg.slurm_array_parallelism,
        setup=tuple(cfg.slurm_setup),
        extra=cfg.slurm_extra_parameters(),
    )


class CellTask:
    """One cell's `lmp_trainer` run, as a submitit job: picklable, and checkpointable (on a
    preemption submitit calls `checkpoint()`, which saves the run and requeues this task)."""

    def __init__(
        self, command: list[str], args: list[str], folder: Path, cwd: Path, device: str,
        env: dict[str, str],
    ) -> None:  # fmt: skip
        self.command = command
        self.args = args
        self.folder = Path(folder)
        self.cwd = Path(cwd)
        self.device = device
        self.env = env  # set on top of the environment the task starts in
        self._process: subprocess.Popen | None = None
        self._ended = threading.Event()

    def __getstate__(self) -> dict[str, Any]:
        # A requeued task is pickled while its trainer runs; the process stays behind.
        return {k: v for k, v in self.__dict__.items() if k not in ("_process", "_ended")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _process=None, _ended=threading.Event())

    def __call__(self) -> str:
        """Run the cell to its end; returns its state (finished, interrupted, failed...)."""
        self.folder.mkdir(parents=True, exist_ok=True)
        log_path = self.folder / LOG_NAME
        with open(log_path, "ab") as log:
            offset = log.tell()
            log.write(f"$ lmp_trainer {' '.join(self.args)}\n".encode())
            log.flush()
            self._process = subprocess.Popen(
                self.command, cwd=self.cwd, stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, env={**os.environ, **self.env},
            )  # fmt: skip
        self._record("running", pid=self._process.pid, host=socket.gethostname(), job=_job_id())
        previous = {s: signal.signal(s, self._forward) for s in (signal.SIGINT, signal.SIGTERM)}
        waiter = threading.Thread(target=self._wait, daemon=True)
        waiter.start()
        try:
            while not self._ended.wait(1.0):
                pass
        finally:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
        return self._outcome(self._process.returncode, offset)

    def checkpoint(self) -> Any:
        """Preempted or out of time: the trainer saves and stops, then the task is requeued."""
        from submitit.helpers import DelayedSubmission

        self._forward(signal.SIGUSR2, None)
        self._ended.wait(SAVE_WAIT_S)
        if self._process is not None and self._process.returncode is not None:
            self._outcome(self._process.returncode, None)
        return DelayedSubmission(self)

    def _wait(self) -> None:
        assert self._process is not None
        self._process.wait()
        self._ended.set()

    def _forward(self, signum: int, frame: FrameType | None) -> None:
        # The trainer saves on its first signal; Slurm may have signalled it already.
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signum)

    def _outcome(self, code: int, log_offset: int | None) -> str:
        return write_final_record(self.folder, code, log_offset or 0, self.args)

    def _record(self, state: str, **fields: Any) -> None:
        record = {"pid": None, "exit_code": None, "error": None} | fields
        write_record(self.folder, state=state, device=self.device, args=self.args, **record)


def _job_id() -> str | None:
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID") or os.environ.get("SUBMITIT_LOCAL_JOB_ID")


def submitit_folder(spec: GridSpec) -> Path:
    """Where submitit keeps each job's pickles and logs (absolute: a node reads it too)."""
    return spec.out_root.absolute() / SUBMITIT_FOLDER / "%j"


def cell_task(spec: GridSpec, cell: Cell, device: str, gpus: int = 0, **env: str) -> CellTask:
    """The task of a cell: `lmp_trainer` with the cell's flags, under torchrun for N > 1 GPUs."""
    args = cell_trainer_args(spec, cell, device)
    launcher = [sys.executable, "-m", "lmplay.cli.trainer"]
    if gpus > 1:
        launcher = [sys.executable, "-m", "torch.distributed.run", "--standalone",
                    f"--nproc-per-node={gpus}", "-m", "lmplay.cli.trainer"]  # fmt: skip
    return CellTask([*launcher, *args], args, cell_folder(spec, cell), Path.cwd(), device, env)


def cells_to_submit(spec: GridSpec, say: Callable[[str], None]) -> list[Cell]:
    """The cells not finished and not already queued or running somewhere."""
    todo = []
    for cell in spec.cells:
        folder = cell_folder(spec, cell)
        record = read_record(folder)
        if cell_state(folder) == "finished":
            say(f"skip {cell.name}: already finished")
        elif _in_flight(record):
            say(f"skip {cell.name}: job {record.get('job')} is queued or running")
        else:
            todo.append(cell)
    return todo


def _in_flight(record: dict[str, Any]) -> bool:
    """Whether Slurm still knows the job of a submitted or running cell."""
    job = record.get("job")
    if record.get("state") not in ("submitted", "running") or not job or not shutil.which("squeue"):
        return False
    try:
        found = subprocess.run(
            ["squeue", "-h", "-j", str(job), "-o", "%T"], capture_output=True, text=True, timeout=30
        )
    except (OSError, subprocess.SubprocessError):
        return False
    return found.returncode == 0 and bool(found.stdout.strip())


def _submitit() -> Any:
    try:
        import submitit
    except ImportError:
        raise UsageError(
            "--executor slurm and submitit-local need submitit: pip install 'lmplay[slurm]'"
        ) from None
    return submitit


def submit_to_slurm(
    spec: GridSpec, options: SlurmOptions, say: Callable[[str], None], status_hint: str
) -> int:
    """Submit the unfinished cells as one Slurm job array; returns without waiting."""
    submitit = _submitit()
    todo = cells_to_submit(spec, say)
    if not todo:
        say(f"nothing to submit: every cell is finished or in flight ({len(spec.cells)} cells)")
        return EXIT_ALL_FINISHED
    try:
        executor = submitit.SlurmExecutor(folder=submitit_folder(spec))
    except RuntimeError as error:  # no srun: not on a Slurm login node
        raise UsageError(f"--executor slurm: {error}") from None
    executor.update_parameters(**options.parameters())
    tasks = [cell_task(spec, c, options.device(), options.gpus_per_task) for c in todo]
    jobs = executor.submit_array(tasks)
    for task, job in zip(tasks, jobs):
        write_record(task.folder, state="submitted", job=job.job_id, device=task.device,
                     args=task.args, pid=None, exit_code=None, error=None)  # fmt: skip
    array = str(jobs[0].job_id).split("_")[0]
    say(
        f"submitted {len(jobs)} cells as Slurm job array {array} "
        f"(logs: {submitit_folder(spec).parent}); status: {status_hint}"
    )
    return EXIT_ALL_FINISHED


def run_with_submitit_local(
    spec: GridSpec, device: str, env: dict[str, str], say: Callable[[str], None], status_hint: str
) -> int:
    """Run the unfinished cells as submitit local jobs (all at once), then wait for them."""
    submitit = _submitit()
    todo = cells_to_submit(spec, say)
    if todo:
        executor = submitit.LocalExecutor(folder=submitit_folder(spec))
        executor.update_parameters(timeout_min=LOCAL_TIMEOUT_MIN, signal_delay_s=SIGNAL_DELAY_S)
        jobs = executor.submit_array([cell_task(spec, cell, device, **env) for cell in todo])
        say(f"started {len(jobs)} cells as submitit local jobs")
        try:
            for cell, job in zip(todo, jobs):
                say(f"{cell.name}: {_result(job)}")
        except KeyboardInterrupt:
            # The jobs share the terminal's process group: each trainer got the Ctrl+C too,
            # and saves before it exits.
            say("interrupted: every running cell saves and stops; rerun to resume")
            return EXIT_INTERRUPTED
    done = sum(cell_state(cell_folder(spec, c)) == "finished" for c in spec.cells)
    say(f"{done}/{len(spec.cells)} cells finished; status: {status_hint}")
    return EXIT_ALL_FINISHED if done == len(spec.cells) else EXIT_SOME_NOT_FINISHED


def _result(job: Any) -> str:
    try:
        return str(job.result())
    except Exception as error:  # the task itself failed, not its trainer
        return f"failed ({' '.join(str(error).split())[:200]})"


def sbatch_script(spec: GridSpec, options: SlurmOptions, cells: int) -> str:
    """The sbatch script `--executor slurm` submits for an array of `cells` tasks (each task
    runs the pickled CellTask of its cell through submitit)."""
    from submitit.slurm.slurm import _make_sbatch_string

    folder = submitit_folder(spec)
    command = f"{sys.executable} -u -m submitit.core._submit {folder}"
    return _make_sbatch_string(
        command=command, folder=folder, map_count=cells if cells > 1 else None,
        **options.parameters(),
    )  # fmt: skip


def run_executor(
    name: str,
    spec: GridSpec,
    options: SlurmOptions,
    device: str,
    env: dict[str, str],
    dry_run: bool,
    say: Callable[[str], None],
    status_hint: str,
) -> int:
    """`lmp_grid --executor submitit-local|slurm`; `--dry-run` prints the sbatch script and the
    command of each array task instead of submitting."""
    if name == "submitit-local":
        return run_with_submitit_local(spec, device, env, say, status_hint)
    if dry_run:
        _submitit()
        say(sbatch_script(spec, options, len(spec.cells)))
        for index, cell in enumerate(spec.cells):
            task = cell_task(spec, cell, options.device(), options.gpus_per_task)
            say(f"# array task {index}: " + " ".join(map(shlex.quote, task.command)))
        return 0
    return submit_to_slurm(spec, options, say, status_hint)
