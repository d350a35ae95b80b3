"""What the loop records: validation points with word accuracy, and the missing-gradient check."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmp_testing import tiny_run_config
from torch import nn

from lmplay.config import (
    RunConfig,
    RunIOConfig,
    SystemConfig,
)
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer


def config(tmp_path: Path, **sections: object) -> RunConfig:
    # an interval of 1000 samples is never reached: only the start and the stage's end validate
    io = RunIOConfig(out_dir=str(tmp_path / "out"), validation_interval=1000)
    return tiny_run_config(tmp_path, **{"io": io, **sections})


def test_stage_starts_and_ends_with_a_validation_carrying_word_accuracy(tmp_path) -> None:
    session = build_session(config(tmp_path))
    assert Trainer(session).fit() == 0
    final_step = session.runner.step
    assert final_step > 1
    (records,) = session.stats.validation.values()
    assert [r["steps"] for r in records] == [0, final_step]
    for record in records:
        assert 0.0 <= record["word_accuracy"] <= 1.0


def test_rerun_of_a_finished_plan_trains_and_writes_nothing(tmp_path, capsys) -> None:
    cfg = config(tmp_path)
    Trainer(build_session(cfg)).fit()
    written = cfg.model_path().read_bytes()
    again = build_session(config(tmp_path))
    before = again.stats.validation
    assert Trainer(again).fit() == 0
    assert "plan 'test' is already done at step" in capsys.readouterr().err
    assert again.stats.validation == before
    assert cfg.model_path().read_bytes() == written


@pytest.fixture
def dead_parameter(monkeypatch: pytest.MonkeyPatch) -> None:
    """GPT2ish with a wiring bug: a parameter that forward never uses."""
    from lmplay.models.gpt2ish import GPT2ish

    original_init = GPT2ish.__init__

    def init_with_dead_parameter(self, args):
        original_init(self, args)
        self.dead_gate = nn.Parameter(torch.zeros(4))

    monkeypatch.setattr(GPT2ish, "__init__", init_with_dead_parameter)


@pytest.mark.usefixtures("dead_parameter")
def test_check_grads_warns_once_naming_the_unreached_parameter(
    tmp_path, capsys: pytest.CaptureFixture[str]
) -> None:
    Trainer(build_session(config(tmp_path, system=SystemConfig(check_grads=True)))).fit()
    err = capsys.readouterr().err
    assert err.count("got no gradient") == 1
    assert "dead_gate" in err


@pytest.mark.usefixtures("dead_parameter")
def test_without_check_grads_nothing_is_reported(tmp_path, capsys) -> None:
    Trainer(build_session(config(tmp_path))).fit()
    assert "got no gradient" not in capsys.readouterr().err
