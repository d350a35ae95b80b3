"""Interrupt anywhere, rerun, lose nothing: real processes, real signals, bit-exact results.

The trainer's test hook LMPLAY_TEST_PAUSE="POINT:N" (lmplay/train/signals.py) stops the N-th
pass through a point of the loop (validate, save, stage_end) until a line arrives on stdin, so
a signal can be delivered exactly there. Everything else is the command a user would run; the
runs nothing interrupts (the uninterrupted reference, the final reruns) go through the same
`main` in this process, with the same torch thread count as the subprocesses.
"""

from __future__ import annotations

import random
import shutil
import signal
import time
from pathlib import Path

import pytest
from lmp_testing import (
    TINY_FLAGS,
    TrainerProcess,
    assert_bitwise_equal,
    records_without_timing,
    three_stage_plan,
    train_in_process,
)

from lmplay.cli.trainer import build_parser, config_from_args
from lmplay.stats.runs import load_stats
from lmplay.train.checkpoint import load_checkpoint
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer

STAGES = ("simple", "mixed", "qa")
KEEP_LAST = 2
COMMON = ["--save-interval", "8", "--validation-interval", "24", "--keep-last", str(KEEP_LAST)]
EXIT_CODES = {signal.SIGINT: 130, signal.SIGTERM: 143, signal.SIGKILL: -signal.SIGKILL}


def trainer_args(out: str, *extra: str) -> list[str]:
    return ["--training-plan", "plan.json", "--out-dir", out, *TINY_FLAGS, *COMMON, *extra]


def run_to_end(cwd: Path, args: list[str]) -> str:
    code, err = train_in_process(cwd, args)
    assert code == 0, err
    return err


def components(path: Path) -> dict:
    return load_checkpoint(path)["components"]


def saved_steps(train_records: list[dict], save_interval: int) -> list[int]:
    """Steps after which the trainer saved: those whose samples crossed a save interval."""
    steps, before = [], 0
    for record in train_records:
        if record["samples"] // save_interval != before // save_interval:
            steps.append(record["steps"])
        before = record["samples"]
    return steps


@pytest.fixture(scope="module")
def baseline(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The plan folder, with the uninterrupted run in `straight/`."""
    folder = tmp_path_factory.mktemp("interrupts")
    three_stage_plan(folder)
    run_to_end(folder, trainer_args("straight"))
    return folder


def interrupt(run: TrainerProcess, signum: signal.Signals, delay: float | None) -> None:
    """Signal `run` at its pause point, or `delay` seconds after releasing it (mid-step)."""
    if delay is not None:
        run.release()
        time.sleep(delay)
    run.signal(signum)
    run.release()


def interrupt_twice(run: TrainerProcess) -> None:
    """Ctrl+C, then Ctrl+C again once the first was handled, both inside the paused save."""
    run.signal(signal.SIGINT)
    run.wait_for("SIGINT received")
    run.signal(signal.SIGINT)
    time.sleep(0.1)  # let the handler run before the save goes on
    run.release()


@pytest.mark.slow
def test_interrupted_anywhere_then_rerun_is_bitwise_identical(baseline: Path) -> None:
    rng = random.Random(20240611)
    # (signal, where it pauses, seconds after release; None: at the pause point itself)
    events = [
        (signal.SIGINT, "validate:1", None),  # between the sets of the step-0 validation
        (signal.SIGINT, "stage_end:1", None),  # after the last step of stage 1
        (signal.SIGTERM, f"validate:{rng.randint(2, 5)}", None),  # a validation mid-stage
        ("twice", f"save:{rng.randint(1, 3)}", None),  # Ctrl+C, Ctrl+C during one save
        (signal.SIGINT, f"save:{rng.randint(1, 3)}", rng.uniform(0.0, 0.4)),  # mid-step
        (signal.SIGKILL, "stage_end:1", None),  # a crash after the last step of stage 2
    ]
    straight = baseline / "straight"
    train = load_stats(straight / "gpt2ish.stats.jsonl").train
    out = baseline / "interrupted"
    checkpoint = out / "gpt2ish.lmp"
    last_step = 0
    for signum, pause, delay in events:
        run = TrainerProcess(baseline, trainer_args("interrupted"), pause=pause)
        run.wait_for(f"lmplay-test-pause {pause.replace(':', ' ')}")
        if signum == "twice":
            interrupt_twice(run)
            signum = signal.SIGINT
        else:
            interrupt(run, signum, delay)
        code = run.finish()
        assert code == EXIT_CODES[signum], f"{signum!r} at {pause}:\n{run.output}"
        if signum != signal.SIGKILL:
            assert f"stopped by {signum.name} at step" in run.output
            resume = "resume with: lmp_trainer --training-plan plan.json --out-dir interrupted"
            assert resume in run.output
            assert run.output.count(f"{signum.name} received") == 1
        step = components(checkpoint)["runner"]["state"]["step"]
        assert step >= last_step, f"progress went back after {signum!r} at {pause}"
        last_step = step
    # The crash came after a save at the stage's last step and before its stage checkpoint.
    assert last_step == max(r["steps"] for r in train if r["stage"] == "mixed")
    assert components(checkpoint)["plan"]["state"]["stage_index"] == 1
    run_to_end(baseline, trainer_args("interrupted"))

    assert_bitwise_equal(components(straight / "gpt2ish.lmp"), components(checkpoint))
    assert records_without_timing(straight / "gpt2ish.stats.jsonl") == records_without_timing(
        out / "gpt2ish.stats.jsonl"
    )
    for stage in STAGES:
        name = f"gpt2ish.stage-{stage}.lmp"
        assert_bitwise_equal(components(straight / name), components(out / name))
    rolling = sorted(p.name for p in out.glob("gpt2ish.step*.lmp"))
    assert rolling == sorted(p.name for p in straight.glob("gpt2ish.step*.lmp"))
    for name in rolling:
        assert_bitwise_equal(components(straight / name), components(out / name))
    assert [p.name for p in out.glob(".*")] == []  # no temp file left over


@pytest.mark.slow
def test_keep_last_and_stage_checkpoints(baseline: Path) -> None:
    straight = baseline / "straight"
    train = load_stats(straight / "gpt2ish.stats.jsonl").train
    newest = saved_steps(train, save_interval=8)[-KEEP_LAST:]
    rolling = sorted(straight.glob("gpt2ish.step*.lmp"))
    assert [p.name for p in rolling] == [f"gpt2ish.step{step:08d}.lmp" for step in newest]
    for path, step in zip(rolling, newest, strict=True):
        assert components(path)["runner"]["state"]["step"] == step
    final = components(straight / "gpt2ish.lmp")
    for index, stage in enumerate(STAGES):
        saved = components(straight / f"gpt2ish.stage-{stage}.lmp")
        progress = saved["plan"]["state"]
        assert progress["stage_index"] == index + 1
        assert len(progress["completed"]) == index + 1
        assert progress["batcher"] is None
        last_step_of_stage = max(r["steps"] for r in train if r["stage"] == stage)
        assert saved["runner"]["state"]["step"] == last_step_of_stage
    assert_bitwise_equal(components(straight / "gpt2ish.stage-qa.lmp"), final)


def validation_losses(plan_dir: Path, model: Path) -> dict[str, float]:
    """What the trainer's validation says of the weights in `model`, computed in this process."""
    args = trainer_args(str(model.parent), "--model", str(model))
    args[1] = str(plan_dir / "plan.json")
    session = build_session(config_from_args(build_parser().parse_args(args)))
    return Trainer(session).validate()


@pytest.mark.slow
def test_reset_history_keeps_weights_and_restarts_progress(baseline: Path) -> None:
    shutil.copytree(baseline / "straight", baseline / "reset")
    final = baseline / "reset" / "gpt2ish.lmp"
    expected = validation_losses(baseline, final)
    stderr = run_to_end(baseline, trainer_args("reset", "--reset-history", "--max-steps", "1"))
    assert "history reset" in stderr
    saved = components(final)
    assert saved["runner"]["state"]["step"] == 1
    assert saved["plan"]["state"]["stage_index"] == 0
    assert saved["plan"]["state"]["completed"] == []
    stats = load_stats(baseline / "reset" / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == [1]
    assert stats.train[0]["stage"] == "simple"
    assert stats.validation.keys() == expected.keys()
    for name, loss in expected.items():
        (record,) = stats.validation[name]
        assert record["steps"] == 0
        assert record["loss"] == pytest.approx(loss, rel=1e-5)  # the weights it started from


@pytest.mark.slow
def test_initial_model_is_read_and_never_written(baseline: Path) -> None:
    initial = baseline / "straight" / "gpt2ish.stage-simple.lmp"
    before = initial.read_bytes(), initial.stat().st_mtime_ns
    start = components(initial)["runner"]["state"]["step"]
    args = trainer_args("from_initial", "--initial-model", str(initial))
    stderr = run_to_end(baseline, [*args, "--max-steps", "1"])
    # A new run from those weights: its steps, plan and stats start at 0.
    assert f"started from {initial} (trained there for {start} steps)" in stderr
    assert (initial.read_bytes(), initial.stat().st_mtime_ns) == before
    saved = components(baseline / "from_initial" / "gpt2ish.lmp")
    assert saved["runner"]["state"]["step"] == 1
    assert saved["plan"]["state"]["stage_index"] == 0
    stats = load_stats(baseline / "from_initial" / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == [1]
    assert stats.meta["initial_model"] == {"path": str(initial), "step": start}
