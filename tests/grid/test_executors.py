"""lmp_grid through submitit: the local executor runs the cells as the local queue would, and
the Slurm executor submits one array whose tasks run each cell's command (no cluster: `sbatch`,
`srun` and `squeue` are stand-ins that record what they get)."""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from lmp_testing import (
    assert_bitwise_equal,
    cli_in_process,
    load_components,
    one_stage_plan,
    records_without_timing,
    train_in_process,
)

from lmplay.grid.executors import CellTask

SEEDS = (0, 1)


def write_grid(folder: Path) -> None:
    one_stage_plan(folder, documents=12)
    base = {
        "training-plan": "plan.json", "num-blocks": 1, "embed-dim": 32, "num-heads": 2,
        "context-len": 32, "batch-size": 8, "validation-samples": 4, "max-steps": 1,
    }  # fmt: skip
    doc = {"base": base, "cross": {"seed": list(SEEDS)}, "out_root": "out"}
    (folder / "grid.json").write_text(json.dumps(doc), encoding="utf-8")


def grid(folder: Path, *args: str) -> subprocess.CompletedProcess:
    return cli_in_process("grid", ["grid.json", *args], folder)


def test_submitit_local_finishes_every_cell_as_the_local_queue_would(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit")
    import torch

    write_grid(tmp_path)
    # The cells' thread count, as in this process: their arithmetic is then bit for bit ours.
    monkeypatch.setenv("OMP_NUM_THREADS", str(torch.get_num_threads()))
    result = grid(tmp_path, "--executor", "submitit-local")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "2/2 cells finished" in result.stdout
    for seed in SEEDS:
        cell = tmp_path / "out" / f"seed={seed}"
        record = json.loads((cell / "cell.json").read_text())
        assert (record["state"], record["exit_code"]) == ("finished", 0)
        # What the local queue runs for this cell, run here: the same model and records.
        reference = [*record["args"][:-4], "--out-dir", f"ref{seed}", "--device", "cpu"]
        code, err = train_in_process(tmp_path, reference)
        assert code == 0, err
        ours, theirs = cell / "gpt2ish.stats.jsonl", tmp_path / f"ref{seed}" / "gpt2ish.stats.jsonl"
        assert records_without_timing(ours) == records_without_timing(theirs)
        ref_model = load_components(tmp_path / f"ref{seed}" / "gpt2ish.lmp")
        assert_bitwise_equal(load_components(cell / "gpt2ish.lmp"), ref_model)
    status = grid(tmp_path, "--status")
    assert status.returncode == 0 and "2 cells: 2 finished" in status.stdout
    again = grid(tmp_path, "--executor", "submitit-local")
    assert again.returncode == 0
    assert "skip seed=0: already finished" in again.stdout and "started" not in again.stdout


def fake_slurm(folder: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """`sbatch` keeping the script it is given, `srun` and a `squeue` that knows every job."""
    bin_dir = folder / "bin"
    bin_dir.mkdir()
    scripts = {
        "sbatch": f'cp "$1" {bin_dir}/submitted.sh\necho "Submitted batch job 4242"',
        "srun": "exit 0",
        "squeue": "echo PENDING",
    }
    for name, body in scripts.items():
        (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
        (bin_dir / name).chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
    return bin_dir / "submitted.sh"


def test_slurm_array_holds_the_signal_and_each_cells_command(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("submitit")
    from submitit.core.utils import DelayedSubmission

    write_grid(tmp_path)
    submitted = fake_slurm(tmp_path, monkeypatch)
    flags = [
        "--executor", "slurm", "--slurm-partition", "gpu", "--slurm-time", "1:30:00",
        "--slurm-setup", "source .venv/bin/activate", "--slurm-extra", "account=lab",
    ]  # fmt: skip
    result = grid(tmp_path, *flags)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "submitted 2 cells as Slurm job array 4242" in result.stdout
    script = submitted.read_text()
    expected = [
        "#SBATCH --array=0-1%2", "#SBATCH --signal=USR2@120", "#SBATCH --time=90",
        "#SBATCH --partition=gpu", "#SBATCH --account=lab", "source .venv/bin/activate",
    ]  # fmt: skip
    for line in expected:
        assert line in script.splitlines(), line
    assert "-m submitit.core._submit" in script
    assert grid(tmp_path, *flags, "--dry-run").stdout.startswith(script)
    for index, seed in enumerate(SEEDS):
        (pickle,) = (tmp_path / "out" / ".submitit" / f"4242_{index}").glob("*_submitted.pkl")
        task = DelayedSubmission.load(pickle).function
        assert isinstance(task, CellTask)
        args = ["--seed", str(seed), "--run-name", f"seed={seed}", "--out-dir", f"out/seed={seed}"]
        assert task.command == [sys.executable, "-m", "lmplay.cli.trainer", *task.args]
        assert task.args[-8:] == [*args, "--device", "cpu"] and task.cwd == tmp_path
        record = json.loads((tmp_path / "out" / f"seed={seed}" / "cell.json").read_text())
        assert (record["state"], record["job"]) == ("submitted", f"4242_{index}")
    again = grid(tmp_path, *flags)  # squeue still knows the jobs: nothing is submitted twice
    assert "nothing to submit" in again.stdout and "skip seed=1: job 4242_1" in again.stdout


def test_a_preempted_task_saves_records_and_requeues_itself(tmp_path: Path) -> None:
    pytest.importorskip("submitit")
    # A stand-in trainer: waits, and on SIGUSR2 exits as lmp_trainer does after saving.
    code = (
        "import signal, sys, time; signal.signal(signal.SIGUSR2, lambda *_: sys.exit(140)); "
        "print('ready', flush=True); time.sleep(60)"
    )
    task = CellTask([sys.executable, "-c", code], ["--seed", "0"], tmp_path / "cell", tmp_path,
                    "cpu", {})  # fmt: skip
    (tmp_path / "cell").mkdir()
    (tmp_path / "cell" / "gpt2ish.lmp").write_bytes(b"a checkpoint")
    task._process = subprocess.Popen(task.command, stdout=subprocess.PIPE, text=True)
    assert task._process.stdout.readline() == "ready\n"
    threading.Thread(target=task._wait, daemon=True).start()
    requeued = task.checkpoint()
    assert task._process.returncode == 140
    record = json.loads((tmp_path / "cell" / "cell.json").read_text())
    assert (record["state"], record["exit_code"]) == ("interrupted", 140)
    assert requeued.function is task
    again = pickle.loads(pickle.dumps(requeued.function))
    assert again.command == task.command and again._process is None


def test_slurm_flags_need_the_slurm_executor(tmp_path: Path) -> None:
    write_grid(tmp_path)
    result = grid(tmp_path, "--slurm-partition", "gpu")
    assert result.returncode == 2
    assert result.stderr == "error: --slurm-partition: only for --executor slurm\n"
