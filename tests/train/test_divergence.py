"""A NaN loss stops training, keeps the good checkpoint, and saves the last good state apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmp_testing import tiny_run_config

from lmplay.config import RunIOConfig
from lmplay.train.checkpoint import last_good_path, load_checkpoint
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer, TrainingDiverged


def test_nan_loss_stops_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    cfg = tiny_run_config(
        tmp_path,
        documents=30,
        io=RunIOConfig(out_dir=str(tmp_path / "out"), save_interval=4, max_steps=10),
    )
    session = build_session(cfg)
    poison_from_step = 3

    def poison(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * float("nan") if session.runner.step >= poison_from_step else output

    session.model.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 4"):
        Trainer(session).fit()
    good = load_checkpoint(cfg.model_path())["components"]
    last_good = load_checkpoint(last_good_path(cfg.model_path()))["components"]
    assert good["runner"]["state"]["step"] == poison_from_step
    assert last_good["runner"]["state"]["step"] == poison_from_step
    for name, value in last_good["model"]["state"].items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, good["model"]["state"][name])
