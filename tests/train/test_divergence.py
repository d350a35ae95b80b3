"""A NaN loss stops training, keeps the good checkpoint, and saves the last good state apart."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from lmp_testing import tiny_run_config

from lmplay.cli import export, generate
from lmplay.config import RunConfig, RunIOConfig
from lmplay.train.checkpoint import load_checkpoint, save_checkpoint
from lmplay.train.session import Session, build_session
from lmplay.train.trainer import Trainer, TrainingDiverged

POISON_FROM_STEP = 3  # the 4th step is the first whose loss or gradients are poisoned


def _run_to_poison(tmp_path: Path) -> tuple[RunConfig, Session]:
    cfg = tiny_run_config(
        tmp_path,
        documents=30,
        io=RunIOConfig(out_dir=str(tmp_path / "out"), save_interval=4, max_steps=10),
    )
    return cfg, build_session(cfg)


def _assert_last_good_is_the_step_before(cfg: RunConfig) -> None:
    """The checkpoint and the last-good state both hold the finite weights of the step before."""
    good = load_checkpoint(cfg.model_path())["components"]
    last_good = load_checkpoint(cfg.run_files().last_good)["components"]
    assert good["runner"]["state"]["step"] == POISON_FROM_STEP
    assert last_good["runner"]["state"]["step"] == POISON_FROM_STEP
    for name, value in last_good["model"]["state"].items():
        assert torch.isfinite(value).all(), name
        assert torch.equal(value, good["model"]["state"][name])


def test_nan_loss_stops_and_keeps_the_last_good_state(tmp_path: Path) -> None:
    cfg, session = _run_to_poison(tmp_path)

    def poison(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> torch.Tensor:
        return output * float("nan") if session.runner.step >= POISON_FROM_STEP else output

    session.model.register_forward_hook(poison)
    with pytest.raises(TrainingDiverged, match="loss is nan at step 4"):
        Trainer(session).fit()
    _assert_last_good_is_the_step_before(cfg)


def test_finite_loss_with_non_finite_gradients_is_not_applied(tmp_path: Path) -> None:
    cfg, session = _run_to_poison(tmp_path)
    weight = next(p for p in session.model.parameters() if p.requires_grad)

    def poison(grad: torch.Tensor) -> torch.Tensor:
        return grad * float("inf") if session.runner.step >= POISON_FROM_STEP else grad

    weight.register_hook(poison)
    with pytest.raises(TrainingDiverged, match=r"gradient norm is (inf|nan) .* at step 4"):
        Trainer(session).fit()
    _assert_last_good_is_the_step_before(cfg)


def test_export_and_generator_refuse_non_finite_weights(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    cfg = tiny_run_config(tmp_path, documents=4)
    components = build_session(cfg).checkpoint_map.components()
    name, weight = next(iter(components["model"]["state"].items()))
    weight[0] = float("nan")
    poisoned = tmp_path / "poisoned.lmp"
    save_checkpoint(poisoned, components)
    assert export.main([str(poisoned), str(tmp_path / "hf")]) == 2
    with pytest.raises(SystemExit) as exit_:
        generate.main(["Hi", "--model", str(poisoned), "--max-new-tokens", "2"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.count(f"weight '{name}' holds NaN or infinite values") == 2
    assert all(line.startswith("error: ") for line in err.splitlines())
    assert not (tmp_path / "hf").exists()
