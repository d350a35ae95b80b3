"""lmp_grid end to end with real lmp_trainer cells: stop mid-way, rerun, a failing cell.

One scenario keeps the suite fast: a grid of 2 architectures × 2 seeds (4 tiny cells of 2 steps)
plus a named run whose flags lmp_trainer refuses (2 cells), run 2 cells at a time.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from lmp_testing import TINY_FLAGS, one_stage_plan

from lmplay.cli.grid import main
from lmplay.processes import process_alive
from lmplay.stats.runs import load_stats

ARCHS = ("gpt2ish", "modern")
BAD_ERROR = "error: --mini-batch-size 16 is larger than --batch-size 8"


def tiny_base() -> dict[str, str]:
    pairs = dict(zip(TINY_FLAGS[::2], TINY_FLAGS[1::2]))
    base = {flag.removeprefix("--"): value for flag, value in pairs.items() if flag != "--device"}
    return {**base, "training-plan": "plan.json", "max-steps": "2"}


def write_grid(folder: Path) -> Path:
    one_stage_plan(folder, documents=12)
    runs = [
        {"name": "gpt2ish", "flags": {"exp": "gpt2ish"}},
        {"name": "bad", "flags": {"exp": "gpt2ish", "mini-batch-size": 16}},
        {"name": "modern", "flags": {"exp": "modern"}},
    ]
    doc = {"base": tiny_base(), "cross": {"seed": [0, 1]}, "runs": runs, "out_root": "out"}
    path = folder / "grid.json"
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


def grid_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "lmplay.cli.grid", "grid.json", "--jobs", "2", *args]


def status(folder: Path, capsys) -> tuple[int, dict[str, list[str]]]:
    old = Path.cwd()
    os.chdir(folder)
    try:
        code = main(["grid.json", "--status"])
    finally:
        os.chdir(old)
    lines = capsys.readouterr().out.splitlines()
    rows = {line.split()[0]: line.split() for line in lines[1:-1]}
    return code, rows


@pytest.mark.slow
def test_stopped_grid_resumes_only_missing_cells_and_a_bad_cell_fails_alone(
    tmp_path: Path, capsys
) -> None:
    write_grid(tmp_path)
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    first = subprocess.Popen(
        grid_command(), cwd=tmp_path, env=env, stdout=subprocess.PIPE, text=True
    )
    lines = []
    for line in first.stdout:
        lines.append(line)
        if " finished " in line:
            first.send_signal(signal.SIGINT)  # Ctrl+C once a cell is done, others running
            break
    rest, _ = first.communicate(timeout=120)
    lines += rest.splitlines(keepends=True)
    assert first.returncode == 130, "".join(lines)
    assert "stopped by SIGINT; rerun to resume" in rest

    code, rows = status(tmp_path, capsys)
    assert code == 1
    done = {cell for cell, row in rows.items() if row[1] == "finished"}
    assert done and len(done) < 6
    assert not any(row[1] == "running" for row in rows.values())
    logs = {cell: (tmp_path / "out" / cell / "train.log").read_bytes() for cell in done}

    second = subprocess.run(
        grid_command(), cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180
    )
    assert second.returncode == 1, second.stdout + second.stderr  # the bad cells failed
    started = {line.split()[2] for line in second.stdout.splitlines() if " start " in line}
    skipped = {
        line.split()[2].rstrip(":") for line in second.stdout.splitlines() if " skip " in line
    }
    assert skipped == done and started == set(rows) - done
    for cell in done:  # a finished cell is not run again
        assert (tmp_path / "out" / cell / "train.log").read_bytes() == logs[cell]

    code, rows = status(tmp_path, capsys)
    assert code == 1
    good = [f"{arch},seed={seed}" for arch in ARCHS for seed in (0, 1)]
    for cell in good:
        state, step = rows[cell][1:3]
        assert (state, step) == ("finished", "2")
    for cell in ("bad,seed=0", "bad,seed=1"):
        row = " ".join(rows[cell])
        assert rows[cell][1] == "failed" and f"exit 2: {BAD_ERROR}" in row
        record = json.loads((tmp_path / "out" / cell / "cell.json").read_text())
        assert record["exit_code"] == 2 and record["error"].startswith(BAD_ERROR)
    stats = load_stats(tmp_path / "out" / "modern,seed=1" / "modern.stats.jsonl")
    assert stats.run == "modern,seed=1" and stats.meta["seed"] == 1


def test_a_cell_that_outlives_its_killed_queue_records_that_it_finished(
    tmp_path: Path, capsys
) -> None:
    one_stage_plan(tmp_path, documents=12)
    doc = {"base": tiny_base(), "cross": {"seed": [3]}}
    (tmp_path / "grid.json").write_text(json.dumps(doc), encoding="utf-8")
    command = [sys.executable, "-m", "lmplay.cli.grid", "grid.json", "--out-root", "elsewhere"]
    queue = subprocess.Popen(command, cwd=tmp_path, stdout=subprocess.PIPE, text=True)
    for line in queue.stdout:
        if " start " in line:
            break
    cell = tmp_path / "elsewhere" / "seed=3"
    pid = json.loads((cell / "cell.json").read_text())["pid"]
    queue.kill()  # SIGKILL: the queue cannot record anything
    queue.wait()
    deadline = time.monotonic() + 120
    # A finished child of the killed queue may linger as a zombie until init reaps it.
    while process_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    record = json.loads((cell / "cell.json").read_text())
    assert (record["state"], record["exit_code"]) == ("finished", 0)
    old = Path.cwd()
    os.chdir(tmp_path)
    try:
        assert main(["grid.json", "--out-root", "elsewhere", "--status"]) == 0
        assert " finished " in capsys.readouterr().out
        assert main(["grid.json", "--out-root", "elsewhere"]) == 0  # nothing left to run
    finally:
        os.chdir(old)
    out = capsys.readouterr().out
    assert "skip seed=3: already finished" in out
    assert "status: lmp_grid grid.json --status --out-root elsewhere" in out
