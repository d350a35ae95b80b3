"""`lmp_plotstats --to-tensorboard DIR`: stats files become TensorBoard runs with their values."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from lmp_testing import cli_in_process

from lmplay.stats.recorder import StatsRecorder


def write_run(path: Path, run: str, scale: float) -> None:
    recorder = StatsRecorder(path, run=run, exp="gpt2ish", model="m.lmp", meta={"lr": 0.001})
    for step in range(1, 5):
        counters = {"samples": 8 * step, "tokens": 100 * step, "steps": step}
        recorder.add_train({**counters, "stage": "main", "loss": scale / step})
        if step % 2 == 0:
            recorder.add_validation("shakespeare", {**counters, "loss": scale / step + 1})
    recorder.add_generation({**counters, "prompt": "The", "text": " king"})
    recorder.add_stop({**counters, "stage": "main", "reason": "max_steps", "message": "m"})
    recorder.flush()


def test_each_run_becomes_a_tensorboard_run_with_its_values(tmp_path: Path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_multiplexer import EventMultiplexer

    write_run(tmp_path / "grid" / "a" / "gpt2ish.stats.jsonl", "modern,seed=0", 8.0)
    write_run(tmp_path / "grid" / "b" / "gpt2ish.stats.jsonl", "modern,seed=1", 4.0)
    result = cli_in_process("plotstats", ["grid", "--to-tensorboard", "tb"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines() == ["tb/modern,seed=0", "tb/modern,seed=1"]
    assert not list(tmp_path.glob("grid/*.png"))  # converted, not plotted
    reader = EventMultiplexer().AddRunsFromDirectory(str(tmp_path / "tb"))
    reader.Reload()
    for run, scale in (("modern,seed=0", 8.0), ("modern,seed=1", 4.0)):
        train = [(e.step, e.value) for e in reader.Scalars(run, "train/loss")]
        assert train == [(s, pytest.approx(scale / s)) for s in range(1, 5)]
        val = [(e.step, e.value) for e in reader.Scalars(run, "validation/shakespeare/loss")]
        assert val == [(s, pytest.approx(scale / s + 1)) for s in (2, 4)]
        assert {"generations/The", "stop"} <= set(reader.GetAccumulator(run).Tags()["tensors"])


def test_without_tensorboard_the_install_command_is_given(tmp_path: Path, monkeypatch) -> None:
    write_run(tmp_path / "r.stats.jsonl", "r", 1.0)
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    result = cli_in_process("plotstats", ["r.stats.jsonl", "--to-tensorboard", "tb"], tmp_path)
    assert result.returncode == 2
    assert result.stderr == (
        "error: --to-tensorboard needs the tensorboard package: pip install 'lmplay[tensorboard]'\n"
    )
    assert not (tmp_path / "tb").exists()
