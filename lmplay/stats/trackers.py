"""TensorBoard, Weights & Biases and MLflow sinks, fed by the StatsRecorder as records arrive.

The stats file stays the one source of truth: a tracker gets a copy of each record line (train,
validation, stop, generation) with the optimizer step as its step, `progress/tokens` and
`progress/samples` as metrics beside it (W&B can plot against either), the stats `meta` as
hyperparameters and the generated samples as text. Only the rank that writes the stats file logs.

A sink that raises warns once, on one line, and is off for the rest of the run: training never
stops because of a tracker. Each library is imported when its sink starts, never at import.

Resuming continues the same tracker run: the W&B and MLflow run ids travel in the checkpoint
(inside the stats component's state) and TensorBoard appends to the same folder. A resumed run
logs only the records its checkpoint did not hold. Records that a crashed run logged past its
last checkpoint are replayed by the resumed run: TensorBoard is told to drop them (a purge
event at the resumed step), MLflow skips steps its history already holds, and W&B ignores a
step lower than the last one it holds.
"""

from __future__ import annotations

import hashlib
import os
import re
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from tqdm import tqdm

from lmplay.config import TRACKERS
from lmplay.errors import UsageError
from lmplay.run_files import RunFiles

_PACKAGES = {"tensorboard": "tensorboard", "wandb": "wandb", "mlflow": "mlflow"}
_COUNTERS = ("tokens", "samples")
_MLFLOW_KEY = re.compile(r"[^\w\-. /]")  # what MLflow refuses in a metric or param name
_MLFLOW_BATCH = 1000  # metrics per log_batch call, MLflow's limit


def check_installed(names: tuple[str, ...], flag: str | None = None) -> None:
    """Refuse, before any work, a tracker whose library is not importable; `flag` names the
    option that asked for it (default: `--log-to NAME`)."""
    import importlib

    for name in names:
        try:
            importlib.import_module(_PACKAGES[name])
        except ImportError:
            raise UsageError(
                f"{flag or f'--log-to {name}'} needs the {_PACKAGES[name]} package: "
                f"pip install 'lmplay[{name}]'"
            ) from None


@dataclass
class TrackedRun:
    """What a sink needs to start: the run's name and settings, and where it resumes."""

    name: str
    hparams: dict[str, bool | int | float | str]
    first_step: int  # the first step this process may log (0: a fresh run)
    run_ids: dict[str, str] = field(default_factory=dict)  # tracker -> run id stored


class Sink(Protocol):
    name: str

    def start(self, run: TrackedRun) -> str | None:
        """Open (or resume) the tracker's run; returns its id to store, if it has one."""
        ...

    def log(self, line: dict[str, Any]) -> None: ...

    def flush(self) -> None: ...

    def close(self, exit_code: int) -> None: ...


class Trackers:
    """Every sink of a run behind one interface; a failing sink is switched off, once."""

    def __init__(self, sinks: list[Sink]) -> None:
        self.sinks = list(sinks)
        self.run_ids: dict[str, str] = {}
        self.started = False

    @classmethod
    def from_names(cls, names: tuple[str, ...], files: RunFiles) -> Trackers:
        builders = {
            "tensorboard": lambda: TensorBoardSink(files.tensorboard),
            "wandb": lambda: WandbSink(files.folder),
            "mlflow": lambda: MlflowSink(files.mlflow_store),
        }
        return cls([builders[name]() for name in names if name in TRACKERS])

    def start(self, run: TrackedRun) -> None:
        self.started = True
        run.run_ids = dict(self.run_ids)
        for sink in list(self.sinks):
            run_id = self._call(sink, sink.start, run)
            if isinstance(run_id, str):
                self.run_ids[sink.name] = run_id

    def log(self, line: dict[str, Any]) -> None:
        for sink in list(self.sinks):
            self._call(sink, sink.log, line)

    def flush(self) -> None:
        for sink in list(self.sinks):
            self._call(sink, sink.flush)

    def close(self, exit_code: int) -> None:
        if self.started:
            for sink in list(self.sinks):
                self._call(sink, sink.close, exit_code)
        self.sinks = []

    def state_dict(self) -> dict[str, Any]:
        return {"run_ids": dict(self.run_ids)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        ids = state.get("run_ids", {}) if isinstance(state, dict) else {}
        self.run_ids = {str(k): str(v) for k, v in ids.items() if isinstance(v, str)}

    def _call(self, sink: Sink, method: Any, *args: Any) -> Any:
        try:
            return method(*args)
        except Exception as error:  # a tracker must never stop training
            self.sinks.remove(sink)
            text = " ".join(str(error).split())[:200] or type(error).__name__
            tqdm.write(  # above the progress bar, not through it
                f"warning: {sink.name} logging failed ({text}); it is off for the rest of this "
                "run, the stats file is unaffected",
                file=sys.stderr,
            )
            return None


def flat_hparams(meta: dict[str, Any], prefix: str = "") -> dict[str, bool | int | float | str]:
    """`{"model_args": {"embed_dim": 32}}` -> `{"model_args.embed_dim": 32}`; lists as text."""
    flat: dict[str, bool | int | float | str] = {}
    for key, value in meta.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(flat_hparams(value, f"{name}."))
        elif isinstance(value, (bool, int, float, str)):
            flat[name] = value
        else:
            flat[name] = str(value)
    return flat


def line_metrics(line: dict[str, Any]) -> dict[str, float]:
    """A train or validation line's numbers: `train/loss`, `validation/<set>/loss`,
    `progress/tokens`..."""
    kind, record = line.get("kind"), line.get("record", {})
    if kind == "train":
        prefix = "train/"
    elif kind == "validation":
        prefix = f"validation/{line['set']}/"
    else:
        return {}
    metrics = {
        f"progress/{key}": float(record[key]) for key in _COUNTERS if _number(record.get(key))
    }
    for key, value in record.items():
        if key not in (*_COUNTERS, "steps") and _number(value):
            metrics[prefix + key] = float(value)
    return metrics


def line_step(line: dict[str, Any]) -> int:
    """The optimizer step of a record line (0 for a line without one)."""
    record = line.get("record")
    steps = record.get("steps") if isinstance(record, dict) else None
    return int(steps) if _number(steps) else 0


def line_text(line: dict[str, Any]) -> tuple[str, str] | None:
    """A stop or generation line as (tag, text); None for other kinds."""
    record = line.get("record", {})
    if line.get("kind") == "generation":
        return f"generations/{record['prompt']}", f"{record['prompt']}{record['text']}"
    if line.get("kind") == "stop":
        return "stop", f"{record['reason']}: {record.get('message') or ''}".rstrip(": ")
    return None


def _number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


class TensorBoardSink:
    """Event files in one folder per run, written with tensorboard's own writer (no torch)."""

    name = "tensorboard"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._writer: Any = None

    def start(self, run: TrackedRun) -> None:
        from tensorboard.compat.proto.event_pb2 import Event, SessionLog
        from tensorboard.plugins.hparams.summary_v2 import hparams_pb
        from tensorboard.summary.writer.event_file_writer import EventFileWriter

        self.folder.mkdir(parents=True, exist_ok=True)
        self._writer = EventFileWriter(str(self.folder), max_queue_size=1000, flush_secs=30)
        # Readers drop the events at this step and later that were written before this one:
        # what a crashed run logged past its checkpoint, which this run logs again.
        start = SessionLog(status=SessionLog.START)
        self._writer.add_event(Event(wall_time=time.time(), step=run.first_step, session_log=start))
        self._add(hparams_pb(run.hparams, trial_id=run.name), run.first_step)

    def log(self, line: dict[str, Any]) -> None:
        from tensorboard.compat.proto.summary_pb2 import Summary

        step = line_step(line)
        metrics = line_metrics(line)
        if metrics:
            values = [Summary.Value(tag=k, simple_value=v) for k, v in metrics.items()]
            self._add(Summary(value=values), step)
        text = line_text(line)
        if text is not None:
            from tensorboard.plugins.text.summary_v2 import text_pb

            self._add(text_pb(*text), step)

    def flush(self) -> None:
        if self._writer is not None:
            self._writer.flush()

    def close(self, exit_code: int) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None

    def _add(self, summary: Any, step: int) -> None:
        from tensorboard.compat.proto.event_pb2 import Event

        self._writer.add_event(Event(wall_time=time.time(), step=step, summary=summary))


class WandbSink:
    """A W&B run; W&B's own environment (WANDB_MODE, WANDB_PROJECT, WANDB_DIR...) applies."""

    name = "wandb"

    def __init__(self, folder: Path) -> None:
        self.folder = Path(folder)
        self._run: Any = None
        self._samples: list[list[Any]] = []
        self._first_step = 0

    def start(self, run: TrackedRun) -> str:
        import wandb

        resumed = run.run_ids.get(self.name)
        options: dict[str, Any] = {"name": run.name, "resume": "allow", "id": resumed}
        if "WANDB_PROJECT" not in os.environ:
            options["project"] = "lmplay"
        if "WANDB_DIR" not in os.environ:
            self.folder.mkdir(parents=True, exist_ok=True)
            options["dir"] = str(self.folder)
        self._run = wandb.init(**options, config=None if resumed else run.hparams)
        if resumed:
            self._run.config.update(run.hparams, allow_val_change=True)
        # Steps the server already holds (an online resume) cannot be logged again.
        self._first_step = int(getattr(self._run, "starting_step", 0) or 0)
        return str(self._run.id)

    def log(self, line: dict[str, Any]) -> None:
        step = line_step(line)
        if step < self._first_step:
            return
        data: dict[str, Any] = dict(line_metrics(line))
        record = line.get("record", {})
        if line.get("kind") == "generation":
            import wandb

            self._samples.append([step, record["prompt"], record["text"]])
            data["generations"] = wandb.Table(
                columns=["step", "prompt", "text"], data=self._samples
            )
        elif line.get("kind") == "stop":
            self._run.summary["stop_reason"] = record["reason"]
        if data:
            self._run.log(data, step=step)

    def flush(self) -> None:
        pass  # W&B writes from its own process

    def close(self, exit_code: int) -> None:
        if self._run is not None:
            self._run.finish(exit_code=exit_code)
            self._run = None


class MlflowSink:
    """An MLflow run in MLFLOW_TRACKING_URI, else in a file store `mlruns/` beside the run.

    Metrics are sent in batches when the stats file is flushed (every 30 s and at each save),
    not one call per step: a remote server then costs the loop nothing.
    """

    name = "mlflow"

    def __init__(self, store: Path) -> None:
        self.store = Path(store)
        self._client: Any = None
        self._run_id = ""
        self._logged: dict[str, int] | None = None  # metric -> last step held (a resumed run)
        self._pending: list[Any] = []  # metrics not sent yet

    def start(self, run: TrackedRun) -> str:
        from mlflow.tracking import MlflowClient

        uri = os.environ.get("MLFLOW_TRACKING_URI")
        if not uri:
            # MLflow 3 asks file stores to opt in; a store beside the run needs no server.
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")
            uri = self.store.resolve().as_uri()
        self._client = MlflowClient(tracking_uri=uri)
        resumed = run.run_ids.get(self.name)
        if resumed and self._exists(resumed):
            self._run_id = resumed
            self._client.update_run(resumed, status="RUNNING")
            self._logged = {}
            return resumed
        name = os.environ.get("MLFLOW_EXPERIMENT_NAME", "lmplay")
        experiment = self._client.get_experiment_by_name(name)
        experiment_id = (
            experiment.experiment_id if experiment else self._client.create_experiment(name)
        )
        self._run_id = self._client.create_run(experiment_id, run_name=run.name).info.run_id
        self._log_params(run.hparams)
        return self._run_id

    def log(self, line: dict[str, Any]) -> None:
        from mlflow.entities import Metric

        step = line_step(line)
        now = int(time.time() * 1000)
        metrics = [
            Metric(_MLFLOW_KEY.sub("_", key), value, now, step)
            for key, value in line_metrics(line).items()
        ]
        self._pending += [m for m in metrics if step > self._held(m.key)]
        if len(self._pending) >= _MLFLOW_BATCH:
            self.flush()
        record = line.get("record", {})
        if line.get("kind") == "stop":
            self._client.set_tag(self._run_id, "stop_reason", record["reason"])
        text = line_text(line)
        if line.get("kind") == "generation" and text is not None:
            digest = hashlib.sha1(record["prompt"].encode()).hexdigest()[:8]
            self._client.log_text(self._run_id, text[1], f"generations/step{step:08d}-{digest}.txt")

    def flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending[:_MLFLOW_BATCH], self._pending[_MLFLOW_BATCH:]
            self._client.log_batch(self._run_id, metrics=batch)

    def close(self, exit_code: int) -> None:
        if self._client is not None:
            self.flush()
            status = {0: "FINISHED", 130: "KILLED", 143: "KILLED"}.get(exit_code, "FAILED")
            self._client.set_terminated(self._run_id, status=status)
            self._client = None

    def _exists(self, run_id: str) -> bool:
        """Whether the store holds the stored run (another MLFLOW_TRACKING_URI may not)."""
        from mlflow.exceptions import MlflowException

        try:
            self._client.get_run(run_id)
        except MlflowException:
            return False
        return True

    def _held(self, key: str) -> int:
        """The last step of `key` the resumed run already holds (-1: none, or a new run)."""
        if self._logged is None:
            return -1
        if key not in self._logged:
            history = self._client.get_metric_history(self._run_id, key)
            self._logged[key] = max((m.step for m in history), default=-1)
        return self._logged[key]

    def _log_params(self, hparams: dict[str, Any]) -> None:
        from mlflow.entities import Param

        params = [Param(_MLFLOW_KEY.sub("_", k), str(v)[:500]) for k, v in hparams.items()]
        for start in range(0, len(params), 100):  # MLflow takes at most 100 params a batch
            self._client.log_batch(self._run_id, params=params[start : start + 100])
