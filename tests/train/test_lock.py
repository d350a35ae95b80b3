"""One run per checkpoint: a second trainer is refused at once; a killed holder never blocks."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, one_stage_plan, run_cli

from lmplay.cli.trainer import main
from lmplay.errors import UsageError
from lmplay.run_files import RunFiles
from lmplay.train.lock import MARK, run_lock
from lmplay.train.trainer import Trainer

HOLD = "import sys, time; from lmplay.train.lock import run_lock\n" \
    "with run_lock(sys.argv[1]):\n    print('locked', flush=True); time.sleep(60)"  # fmt: skip


def test_second_trainer_on_the_same_model_exits_2_naming_the_holder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    one_stage_plan(tmp_path, documents=12)
    monkeypatch.chdir(tmp_path)
    args = ["--training-plan", "plan.json", "--model", "out/run.lmp", *TINY_FLAGS]
    seen = {}

    def fit_with_a_rival(trainer: Trainer) -> int:
        # While this run holds the lock, start a real second lmp_trainer on the same --model.
        seen["rival"] = run_cli("trainer", [*args, "--max-steps", "1"], cwd=tmp_path)
        seen["lock"] = RunFiles(Path("out/run.lmp")).lock.read_text()
        return 0

    monkeypatch.setattr(Trainer, "fit", fit_with_a_rival)
    assert main(args) == 0
    rival = seen["rival"]
    assert rival.returncode == 2
    assert rival.stderr.count("\n") == 1 and rival.stderr.startswith("error: ")
    assert f"out/run.lmp is in use by process pid {os.getpid()}" in rival.stderr
    assert seen["lock"].startswith(f"{MARK}\npid {os.getpid()}: ")
    assert not (tmp_path / "out" / "run.lmp").exists()  # the rival wrote nothing
    assert not RunFiles(tmp_path / "out" / "run.lmp").lock.exists()  # released and removed


def test_lock_of_a_killed_process_does_not_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    one_stage_plan(tmp_path, documents=12)
    monkeypatch.chdir(tmp_path)
    model = tmp_path / "out" / "run.lmp"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(model)], stdout=subprocess.PIPE, text=True, env=env
    )
    try:
        assert holder.stdout.readline().strip() == "locked"
        args = ["--training-plan", "plan.json", "--model", str(model), *TINY_FLAGS]
        assert main([*args, "--max-steps", "1"]) == 2
        assert f"in use by process pid {holder.pid}" in capsys.readouterr().err
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert RunFiles(model).lock.exists()  # left behind by the killed holder
    assert main([*args, "--max-steps", "1"]) == 0
    assert "taking over the lock" in capsys.readouterr().err
    assert model.exists()
    assert not RunFiles(model).lock.exists()


def test_a_file_that_is_not_an_lmplay_lock_is_refused_and_kept(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "run.lmp")
    files.lock.write_text("another tool's lock\n")
    with pytest.raises(UsageError, match="is not an lmplay lock"), run_lock(files):
        pass
    assert files.lock.read_text() == "another tool's lock\n"


def test_a_symlink_at_the_lock_path_is_refused_and_its_target_untouched(tmp_path: Path) -> None:
    files = RunFiles(tmp_path / "run.lmp")
    target = tmp_path / "precious.txt"
    target.write_text(f"{MARK}\nmine\n")  # even a target that looks like a lock
    files.lock.symlink_to(target)
    with pytest.raises(UsageError, match="is a symlink"), run_lock(files):
        pass
    assert target.read_text() == f"{MARK}\nmine\n"
    assert files.lock.is_symlink()


def test_a_checkpoint_named_like_a_lock_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    one_stage_plan(tmp_path, documents=12)
    monkeypatch.chdir(tmp_path)
    Path("x.lock").write_text("user data")
    assert main(["--training-plan", "plan.json", "--model", "x.lock", *TINY_FLAGS]) == 2
    assert "must end in .lmp" in capsys.readouterr().err
    assert Path("x.lock").read_text() == "user data"
