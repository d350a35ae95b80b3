"""Stage marks on every plot, and the LR and realised-mixture plots (`--plot lr,mix`)."""

from __future__ import annotations

from pathlib import Path

import pytest

from lmplay.cli import plotstats
from lmplay.errors import UsageError
from lmplay.stats.curriculum_plot import _shares, parse_plots
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.runs import load_stats
from lmplay.stats.stages import stage_boundaries


def write_curriculum_run(path: Path) -> Path:
    """A run of two stages: 'mixed' (web:code 3:1) at a stable lr, then 'anneal' on code."""
    rec = StatsRecorder(path, run="curr", exp="gpt2ish", model="curr.lmp", meta={})
    web = code = 0
    for step in range(1, 41):
        stage = "mixed" if step <= 30 else "anneal"
        web, code = (web + 75, code + 25) if stage == "mixed" else (web, code + 100)
        lr = 1e-3 if stage == "mixed" else 1e-3 * (40 - step) / 10
        rec.add_train({
            "samples": 4 * step, "tokens": 100 * step, "steps": step, "stage": stage,
            "loss": 5.0 - step / 20, "lr": lr, "source_tokens": {"web": web, "code": code},
        })  # fmt: skip
        if step % 10 == 0:
            rec.add_validation("web", {"samples": 4 * step, "tokens": 100 * step, "loss": 5.0})
    rec.flush()
    return path


def test_stage_boundaries_and_realised_shares_come_from_the_train_records(tmp_path) -> None:
    run = load_stats(write_curriculum_run(tmp_path / "curr.stats.jsonl"))
    assert stage_boundaries(run) == [(3000, "anneal")]
    shares = dict(_shares(run.train, "web", 10))
    assert shares[3000] == pytest.approx(0.75) and shares[4000] == 0.0
    assert shares[3100] == 0.0  # the window starts afresh with the stage


def test_plotstats_draws_lr_and_mix_with_stage_marks(tmp_path, capsys) -> None:
    write_curriculum_run(tmp_path / "curr.stats.jsonl")
    out = tmp_path / "plots"
    assert plotstats.main([str(tmp_path), "--plot", "lr,mix", "--out-dir", str(out)]) == 0
    for name in ("lr.png", "mix.png", "loss.png"):
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    assert plotstats.main([str(tmp_path), "--plot", "lr,loss", "--out-dir", str(out)]) == 2
    assert "unknown plot 'loss'; choose from lr, mix" in capsys.readouterr().err
    with pytest.raises(UsageError):
        parse_plots(",")
