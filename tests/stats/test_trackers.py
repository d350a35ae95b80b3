"""--log-to: each tracker holds what the stats file holds, a resumed run goes on in the same
tracker run without a duplicate step, and a tracker that fails never stops training.

One tiny run with every installed tracker, stopped by a Ctrl+C and resumed, feeds the checks of
each tracker; no network (W&B offline, MLflow in a file store beside the run).
"""

from __future__ import annotations

import importlib.util
import os
import signal
import struct
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from lmp_testing import cli_in_process, one_stage_plan, train_in_process

from lmplay.config import TRACKERS
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import load_stats
from lmplay.stats.trackers import MlflowSink, TensorBoardSink, TrackedRun, Trackers
from lmplay.train import signals
from lmplay.train.checkpoint import load_checkpoint

PAUSE, END = 3, 5  # steps: the first run is interrupted at its save after PAUSE, then resumed
FLAGS = [
    "--training-plan", "plan.json", "--out-dir", "out", "--device", "cpu",
    "--num-blocks", "1", "--embed-dim", "32", "--num-heads", "2", "--context-len", "32",
    "--batch-size", "8", "--validation-samples", "4", "--optimizer-warmup-steps", "2",
    "--validation-interval", "16", "--generate-every", "16", "--generate-tokens", "3",
    "--generate-prompts", "The", "--save-interval", str(8 * PAUSE),
]  # fmt: skip
INSTALLED = [name for name in TRACKERS if importlib.util.find_spec(name) is not None]


def tracker_env(monkeypatch: pytest.MonkeyPatch, folder: Path) -> None:
    for name in ("WANDB_DIR", "WANDB_PROJECT", "MLFLOW_TRACKING_URI", "MLFLOW_EXPERIMENT_NAME"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("WANDB_MODE", "offline")  # no network, files only
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setenv("WANDB_CONSOLE", "off")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    monkeypatch.chdir(folder)


def run_ids(folder: Path) -> dict[str, str]:
    """The tracker run ids the checkpoint holds."""
    stats = load_checkpoint(folder / "out" / "gpt2ish.lmp")["components"]["stats"]["state"]
    return stats["trackers"]["run_ids"]


class Exploding:
    """A tracker that raises on every call (a full disk, a lost network)."""

    name = "exploding"
    calls = 0

    def _fail(self, *args: Any) -> None:
        Exploding.calls += 1
        raise OSError(28, "No space left on device")

    start = log = flush = close = _fail


class CtrlC:
    """Stdin where the trainer's test hook waits (lmplay/train/signals.py): answers with a real
    SIGINT to this process, as a user's Ctrl+C in the middle of a save."""

    def readline(self) -> str:
        os.kill(os.getpid(), signal.SIGINT)
        return "\n"


@pytest.fixture(scope="module")
def tracked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    """The run folder, the tracker run ids after the first and the resumed run, and the first
    run's stderr; a tracker that raises on every call runs beside the others in the first run."""
    folder = tmp_path_factory.mktemp("trackers")
    one_stage_plan(folder, documents=40)
    log_to = ["--log-to", ",".join(INSTALLED)] if INSTALLED else []
    with pytest.MonkeyPatch.context() as monkeypatch:
        tracker_env(monkeypatch, folder)
        real = Trackers.from_names
        with_exploding = lambda cls, *args: cls([*real(*args).sinks, Exploding()])  # noqa: E731
        monkeypatch.setattr(Trackers, "from_names", classmethod(with_exploding))
        monkeypatch.setattr(signals, "_PAUSE_AT", "save:1")
        monkeypatch.setattr(signals, "_pause_counts", Counter())
        monkeypatch.setattr(sys, "stdin", CtrlC())
        code, first_err = train_in_process(folder, [*FLAGS, *log_to])
        assert code == 130, first_err
        assert f"stopped by SIGINT at step {PAUSE}" in first_err
        first = run_ids(folder)
        monkeypatch.setattr(signals, "_PAUSE_AT", None)
        monkeypatch.setattr(Trackers, "from_names", real)
        code, err = train_in_process(folder, [*FLAGS, *log_to, "--max-steps", str(END)])
        assert code == 0, err
        assert "warning" not in err, err
        yield {"folder": folder, "first": first, "resumed": run_ids(folder), "stderr": first_err}


def stats_series(folder: Path) -> dict[str, list[tuple[int, float]]]:
    stats = load_stats(folder / "out" / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == list(range(1, END + 1))
    series = {"train/loss": [(r["steps"], r["loss"]) for r in stats.train]}
    for name, records in stats.validation.items():
        series[f"validation/{name}/loss"] = [(r["steps"], r["loss"]) for r in records]
    return series


def test_tensorboard_holds_the_stats_file_once_per_step(tracked: dict[str, Any]) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    folder = tracked["folder"] / "out" / "gpt2ish.tensorboard"
    reader = EventAccumulator(str(folder))
    reader.Reload()
    for tag, expected in stats_series(tracked["folder"]).items():
        logged = [(event.step, event.value) for event in reader.Scalars(tag)]
        assert [step for step, _ in logged] == [step for step, _ in expected], tag
        assert [v for _, v in logged] == pytest.approx([v for _, v in expected], rel=1e-6)
    texts = reader.Tags()["tensors"]
    assert "generations/The" in texts and "stop" in texts
    written = [  # every scalar event of every file the two runs wrote, as written
        (value.tag, event.step)
        for path in sorted(folder.iterdir())
        for event in EventFileLoader(str(path)).Load()
        for value in event.summary.value
        if value.tag == "train/loss"
    ]
    assert sorted(written) == [("train/loss", step) for step in range(1, END + 1)]


def test_tensorboard_readers_drop_what_a_crashed_run_logged_past_its_checkpoint(
    tmp_path: Path,
) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    def train(step: int, loss: float) -> dict[str, Any]:
        return {"kind": "train", "record": {"steps": step, "samples": step, "tokens": step,
                                            "loss": loss}}  # fmt: skip

    crashed = TensorBoardSink(tmp_path)
    crashed.start(TrackedRun("run", {}, first_step=0))
    for step in range(1, 5):  # the checkpoint holds steps 1-2; 3-4 are logged, then a crash
        crashed.log(train(step, 1.0))
    crashed.flush()
    resumed = TensorBoardSink(tmp_path)
    resumed.start(TrackedRun("run", {}, first_step=3))
    for step in range(3, 6):
        resumed.log(train(step, 2.0))
    resumed.close(0)
    reader = EventAccumulator(str(tmp_path))
    reader.Reload()
    steps = [(e.step, e.value) for e in reader.Scalars("train/loss")]
    assert steps == [(1, 1.0), (2, 1.0), (3, 2.0), (4, 2.0), (5, 2.0)]


def test_mlflow_run_goes_on_with_each_step_once(tracked: dict[str, Any]) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    run_id = tracked["first"]["mlflow"]
    assert tracked["resumed"]["mlflow"] == run_id
    client = MlflowClient(tracking_uri=(tracked["folder"] / "out" / "mlruns").as_uri())
    run = client.get_run(run_id)
    assert run.info.status == "FINISHED"
    assert run.data.tags["stop_reason"] == "max_steps"
    assert run.data.params["plan"] == "test" and run.data.params["model_args.embed_dim"] == "32"
    runs = client.search_runs([run.info.experiment_id])
    assert [r.info.run_id for r in runs] == [run_id]  # the resumed run made no second one
    for key, expected in stats_series(tracked["folder"]).items():
        history = sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))
        assert history == expected, key
    texts = [a.path for a in client.list_artifacts(run_id, "generations")]
    assert len(texts) == 2  # the prompt at steps 2 and 4


def test_mlflow_skips_steps_a_crashed_run_already_logged(tmp_path: Path, monkeypatch) -> None:
    pytest.importorskip("mlflow")
    from mlflow.tracking import MlflowClient

    tracker_env(monkeypatch, tmp_path)

    def train(step: int) -> dict[str, Any]:
        return {"kind": "train", "record": {"steps": step, "samples": 1, "tokens": 1, "loss": 1.0}}

    crashed = MlflowSink(tmp_path / "mlruns")
    run_id = crashed.start(TrackedRun("run", {"lr": 0.1}, first_step=0))
    for step in range(1, 5):  # the checkpoint holds steps 1-2; 3-4 are sent, then a crash
        crashed.log(train(step))
    crashed.flush()
    resumed = MlflowSink(tmp_path / "mlruns")
    assert resumed.start(TrackedRun("run", {"lr": 0.1}, 3, {"mlflow": run_id})) == run_id
    for step in range(3, 6):
        resumed.log(train(step))
    resumed.close(0)
    client = MlflowClient(tracking_uri=(tmp_path / "mlruns").as_uri())
    steps = sorted(m.step for m in client.get_metric_history(run_id, "train/loss"))
    assert steps == [1, 2, 3, 4, 5]


def wandb_records(path: Path) -> Iterator[Any]:
    """The records of an offline run's `.wandb` file (W&B's LevelDB-style log of protobufs)."""
    from wandb.proto import wandb_internal_pb2

    data, block = path.read_bytes(), 32768
    assert data[:4] == b":W&B"
    position, pending = 7, b""
    while position + 7 <= len(data):
        left = block - position % block
        _, length, kind = struct.unpack("<IHB", data[position : position + 7])
        if left < 7 or (kind == 0 and length == 0):  # the zero padding of a block
            position += left
            continue
        pending += data[position + 7 : position + 7 + length]
        position += 7 + length
        if kind in (1, 4):  # a whole record, or its last piece
            record = wandb_internal_pb2.Record()
            record.ParseFromString(pending)
            pending = b""
            yield record


def test_wandb_offline_run_is_resumed_under_its_id(tracked: dict[str, Any]) -> None:
    pytest.importorskip("wandb")
    run_id = tracked["first"]["wandb"]
    assert tracked["resumed"]["wandb"] == run_id
    runs = sorted((tracked["folder"] / "out" / "wandb").glob("offline-run-*"))
    assert len(runs) == 2 and all(run.name.endswith(f"-{run_id}") for run in runs)
    logged: list[list[tuple[int, float]]] = []
    for run in runs:
        (path,) = run.glob("*.wandb")
        rows = [r.history for r in wandb_records(path) if r.WhichOneof("record_type") == "history"]
        items = [
            (row.step.num, {i.key or "/".join(i.nested_key): i.value_json for i in row.item})
            for row in rows
        ]
        logged.append(
            [(step, float(item["train/loss"])) for step, item in items if "train/loss" in item]
        )
    assert [step for step, _ in logged[0]] == list(range(1, PAUSE + 1))
    assert [step for step, _ in logged[1]] == list(range(PAUSE + 1, END + 1))
    expected = stats_series(tracked["folder"])["train/loss"]
    assert [v for _, v in logged[0] + logged[1]] == pytest.approx([v for _, v in expected])


def test_a_failing_tracker_warns_once_and_neither_training_nor_the_others_stop(
    tracked: dict[str, Any],
) -> None:
    err = tracked["stderr"]
    assert err.count("warning:") == 1 and Exploding.calls == 1
    assert (
        "warning: exploding logging failed ([Errno 28] No space left on device); it is off for "
        "the rest of this run, the stats file is unaffected\n" in err
    )
    stats_series(tracked["folder"])  # every step of both runs is in the stats file
    # The other trackers got every record: the tests above read them back.


@pytest.mark.parametrize("tracker", TRACKERS)
def test_a_missing_library_is_refused_with_its_install_command(
    tracker: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, tracker, None)  # import fails as if not installed
    result = cli_in_process("trainer", ["--log-to", tracker, "--out-dir", "o"], tmp_path)
    assert result.returncode == 2
    assert (
        f"error: --log-to {tracker} needs the {tracker} package: pip install 'lmplay[{tracker}]'"
        in result.stderr
    )
    assert not (tmp_path / "o").exists()


def test_an_unknown_tracker_is_refused(tmp_path: Path) -> None:
    result = cli_in_process("trainer", ["--log-to", "tensorboard,neptune"], tmp_path)
    assert result.returncode == 2
    assert (
        "--log-to 'tensorboard,neptune': neptune; choose from tensorboard, wandb, mlflow"
        in result.stderr
    )


class Recording:
    """A tracker that keeps what it is given."""

    name = "recording"

    def __init__(self) -> None:
        self.runs: list[TrackedRun] = []
        self.lines: list[dict[str, Any]] = []

    def start(self, run: TrackedRun) -> str:
        self.runs.append(run)
        return "run-1"

    def log(self, line: dict[str, Any]) -> None:
        self.lines.append(line)

    def flush(self) -> None:
        pass

    def close(self, exit_code: int) -> None:
        pass


def test_the_recorder_sends_each_new_record_once_and_only_on_the_writing_rank(
    tmp_path: Path,
) -> None:
    path, meta = tmp_path / "r.stats.jsonl", {"lr": 0.1, "model_args": {"embed_dim": 32}}

    def recorder(sink: Recording, write: bool = True) -> StatsRecorder:
        trackers = Trackers([sink])
        return StatsRecorder(path, run="r", exp="e", model="m", meta=meta, write=write,
                             trackers=trackers)  # fmt: skip

    def train(step: int) -> dict[str, Any]:
        return {"samples": step, "tokens": 10 * step, "steps": step, "loss": 1.0 / step}

    other_rank = Recording()
    recorder(other_rank, write=False).add_train(train(1))
    assert other_rank.runs == [] and other_rank.lines == []
    sink = Recording()
    first = recorder(sink)
    for step in (1, 2, 3):
        first.add_train(train(step))
    state = first.state_dict()  # the checkpoint
    first.add_train(train(4))  # logged, then a crash before the next checkpoint
    assert state["trackers"] == {"run_ids": {"recording": "run-1"}}
    assert sink.runs[0].hparams == {"lr": 0.1, "model_args.embed_dim": 32}
    resumed_sink = Recording()
    resumed = recorder(resumed_sink)
    resumed.load_state_dict(state)
    resumed.add_train(train(4))
    (run,) = resumed_sink.runs
    assert (run.first_step, run.run_ids) == (4, {"recording": "run-1"})
    assert [line["record"]["steps"] for line in resumed_sink.lines] == [4]
