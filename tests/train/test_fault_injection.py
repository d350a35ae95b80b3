"""Faults: SIGKILL in the middle of saves, damaged checkpoints, checkpoints of another model.

Whatever happens to the process, the newest complete checkpoint loads and training resumes;
whatever happens to the file, the trainer refuses it with one `error:` line and leaves it alone.
"""

from __future__ import annotations

import contextlib
import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from lmp_testing import TINY_FLAGS, TrainerProcess, one_stage_plan, train_in_process

from lmplay.cli.trainer import build_parser, config_from_args, main
from lmplay.errors import CheckpointError
from lmplay.stats.runs import load_stats
from lmplay.train.checkpoint import load_checkpoint, save_checkpoint
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer

KILLS = 32

# Imports torch and builds a small model + optimizer once (a fork server, so dozens of kills
# stay fast), then per test command: "fork" starts a writer that resumes from the newest
# checkpoint and saves step after step until killed; "reap" waits for the killed writer.
WRITER = r"""
import os, sys, time
import torch
from lmplay.train.checkpoint import load_checkpoint, save_checkpoint

torch.set_num_threads(1)
torch.manual_seed(0)
model = torch.nn.Sequential(torch.nn.Embedding(8192, 64), torch.nn.Linear(64, 64))
optimizer = torch.optim.AdamW(model.parameters())
model(torch.arange(16)).sum().backward()
optimizer.step()
path = sys.argv[1]


def components(step):
    return {
        "model": {"state_args": {"exp": "toy"}, "state": model.state_dict()},
        "optimizer": {"state_args": {"name": "adamw"}, "state": optimizer.state_dict()},
        "runner": {"state_args": {}, "state": {"step": step}},
    }


started = time.perf_counter()
for _ in range(3):
    save_checkpoint(path, components(0))
print(f"ready {(time.perf_counter() - started) / 3}", flush=True)
for command in sys.stdin:
    if command.strip() == "reap":
        os.waitpid(writer, 0)
        print("reaped", flush=True)
        continue
    writer = os.fork()
    if writer == 0:
        step = load_checkpoint(path)["components"]["runner"]["state"]["step"]
        while True:
            step += 1
            save_checkpoint(path, components(step))
            # One write() of one short line is atomic on a pipe: a kill cannot leave half of
            # it for the parent's next line to be glued to.
            os.write(1, f"saved {step}\n".encode())
    print(f"writer {writer}", flush=True)
"""


class ForkServer:
    def __init__(self, path: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-c", WRITER, str(path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.writer: int | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.put(line.strip())

    def send(self, command: str) -> None:
        assert self.process.stdin is not None
        self.process.stdin.write(command + "\n")
        self.process.stdin.flush()

    def expect(self, word: str) -> tuple[str, list[int]]:
        """The rest of the next line starting with `word`, and the steps saved before it."""
        saved = []
        while True:
            line = self.lines.get(timeout=60)
            head, _, rest = line.partition(" ")
            if head == word:
                return rest, saved
            assert head == "saved", line
            saved.append(int(rest))

    def start_writer(self) -> int:
        self.send("fork")
        self.writer = int(self.expect("writer")[0])
        return self.writer

    def close(self) -> None:
        if self.writer is not None:  # a test that failed midway leaves no writer running
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.writer, signal.SIGKILL)
        self.process.kill()
        self.process.wait()


def same_tensors(a: object, b: object) -> bool:
    if isinstance(a, dict):
        return (
            isinstance(b, dict)
            and a.keys() == b.keys()
            and all(same_tensors(a[k], b[k]) for k in a)
        )
    if isinstance(a, torch.Tensor):
        return isinstance(b, torch.Tensor) and torch.equal(a, b)
    return a == b


@pytest.mark.slow
def test_sigkill_during_saves_always_leaves_a_loadable_newest_checkpoint(tmp_path: Path) -> None:
    rng = random.Random(7)
    path = tmp_path / "ckpt.lmp"
    server = ForkServer(path)
    try:
        save_seconds = float(server.expect("ready")[0])
        reference = load_checkpoint(path)["components"]
        step, torn = 0, 0
        for kill in range(KILLS):
            pid = server.start_writer()
            time.sleep(rng.uniform(0, 4 * save_seconds))
            os.kill(pid, signal.SIGKILL)
            server.send("reap")
            _, saved = server.expect("reaped")
            assert saved == list(range(step + 1, step + 1 + len(saved))), "did not resume"
            loaded = load_checkpoint(path)["components"]
            newest = saved[-1] if saved else step
            # The rename may have happened just before the kill, the "saved" line not yet.
            assert loaded["runner"]["state"]["step"] in (newest, newest + 1), kill
            assert same_tensors(loaded["model"], reference["model"])
            assert same_tensors(loaded["optimizer"], reference["optimizer"])
            step = loaded["runner"]["state"]["step"]
            temps = sorted(tmp_path.glob(".ckpt.lmp.tmp-*"))
            if saved:  # its first save removed every temp file of the writers before it
                assert [t.name for t in temps] in ([], [f".ckpt.lmp.tmp-{pid}"])
            torn += any(t.name.endswith(f"-{pid}") for t in temps)
            for temp in temps:  # a torn temp file is refused; a complete one is not torn
                with contextlib.suppress(CheckpointError):
                    model = load_checkpoint(temp)["components"]["model"]
                    assert same_tensors(model, reference["model"])
        print(f"{KILLS} kills, {torn} mid-write, {step} saves completed")
        assert step >= 4, "the writers hardly ever completed a save"
        assert torn >= 4, f"only {torn} of {KILLS} kills hit a save mid-write"
    finally:
        server.close()
    assert [p.name for p in tmp_path.iterdir() if not p.name.startswith(".")] == ["ckpt.lmp"]


def trainer_args(out: str) -> list[str]:
    return ["--training-plan", "plan.json", "--out-dir", out, *TINY_FLAGS, "--save-interval", "8",
            "--validation-interval", "1000", "--keep-last", "2"]  # fmt: skip


@pytest.mark.slow
def test_trainer_killed_mid_training_resumes_by_rerun(tmp_path: Path) -> None:
    rng = random.Random(11)
    one_stage_plan(tmp_path, documents=40)
    run = TrainerProcess(tmp_path, trainer_args("out"), pause=f"save:{rng.randint(2, 4)}")
    run.wait_for("lmplay-test-pause save")
    run.release()
    time.sleep(rng.uniform(0.0, 0.3))  # into the save, or the step after it
    run.signal(signal.SIGKILL)
    assert run.finish(timeout=60) == -signal.SIGKILL
    checkpoint = tmp_path / "out" / "gpt2ish.lmp"
    killed_at = load_checkpoint(checkpoint)["components"]["runner"]["state"]["step"]
    assert killed_at >= 1

    code, err = train_in_process(tmp_path, trainer_args("out"))  # the rerun needs no signals
    assert code == 0, err
    assert f"resumed from out/gpt2ish.lmp at step {killed_at}" in err
    final = load_checkpoint(checkpoint)["components"]
    steps = final["runner"]["state"]["step"]
    assert steps > killed_at
    assert final["plan"]["state"]["stage_index"] == 1  # the plan is done
    stats = load_stats(tmp_path / "out" / "gpt2ish.stats.jsonl")
    assert [r["steps"] for r in stats.train] == list(range(1, steps + 1))  # none lost, none twice
    assert len(list((tmp_path / "out").glob("gpt2ish.step*.lmp"))) == 2
    assert [p.name for p in (tmp_path / "out").glob(".*")] == []  # stale temp files removed


@pytest.fixture
def plan_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    one_stage_plan(tmp_path, documents=12)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def flags(*extra: str, drop: tuple[str, ...] = ()) -> list[str]:
    tiny = [f for i, f in enumerate(TINY_FLAGS) if f not in drop and TINY_FLAGS[i - 1] not in drop]
    return ["--training-plan", "plan.json", "--out-dir", "out", *tiny, *extra]


def write_checkpoint(*args: str) -> Path:
    """A fresh model's checkpoint, written by the trainer's own save."""
    session = build_session(config_from_args(build_parser().parse_args(list(args))))
    Trainer(session).save()
    return session.cfg.model_path()


def refused(capsys: pytest.CaptureFixture, path: Path, args: list[str]) -> str:
    before = path.read_bytes()
    capsys.readouterr()
    assert main(args) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: "), err
    assert path.read_bytes() == before
    return err


@pytest.mark.parametrize("damage", ["flipped", "truncated"])
def test_damaged_checkpoint_exits_2_and_is_left_alone(
    plan_dir: Path, capsys: pytest.CaptureFixture, damage: str
) -> None:
    path = write_checkpoint(*flags())
    data = bytearray(path.read_bytes())
    middle = len(data) // 2
    if damage == "flipped":  # inside the weights: torch.load alone would not notice
        data[middle : middle + 16] = bytes(b ^ 0xFF for b in data[middle : middle + 16])
    else:
        del data[middle:]
    path.write_bytes(bytes(data))
    err = refused(capsys, path, flags("--max-steps", "1"))
    assert err.startswith("error: checkpoint out/gpt2ish.lmp: cannot be read")


def test_checkpoint_of_other_sizes_names_the_contradicting_flag(
    plan_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_checkpoint(*flags("--exp", "modern"))
    err = refused(
        capsys, path, flags("--exp", "modern", "--num-blocks", "3", drop=("--num-blocks",))
    )
    assert "--num-blocks 3 contradicts the checkpoint out/modern.lmp (--num-blocks 2)" in err


def test_checkpoint_whose_keys_differ_names_missing_and_unexpected_keys(
    plan_dir: Path, capsys: pytest.CaptureFixture
) -> None:
    path = write_checkpoint(*flags("--exp", "modern"))
    components = load_checkpoint(path)["components"]
    model = components["model"]
    model["state_args"]["model_args"]["num_blocks"] = 3  # sizes that do not match the weights
    model["state"]["extra.weight"] = torch.zeros(1)
    save_checkpoint(path, components)
    err = refused(capsys, path, flags("--exp", "modern", drop=("--num-blocks",)))
    assert "component 'model' does not fit this run" in err
    assert "missing tensors ['blocks.2." in err and "unexpected tensors ['extra.weight']" in err
