"""Building a run: freezing, optimizer reuse, and flags that contradict a checkpoint."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from lmp_testing import tiny_run_config

from lmplay.config import (
    BatchConfig,
    ModelConfig,
    OptimConfig,
    RunConfig,
    RunIOConfig,
    SystemConfig,
)
from lmplay.errors import UsageError
from lmplay.train.schedule import lr_at
from lmplay.train.session import build_session
from lmplay.train.trainer import Trainer


def config(tmp_path: Path, **sections: object) -> RunConfig:
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=2)
    return tiny_run_config(tmp_path, **{"io": io, **sections})


def test_default_freeze_keeps_only_marked_parameters_trainable(tmp_path, monkeypatch) -> None:
    from lmplay.models.gpt2ish import GPT2ish

    original_init = GPT2ish.__init__

    def init_marking_final_norm(self, args):  # a researcher marking one module trainable
        original_init(self, args)
        for param in self.ln_f.parameters():
            param.freeze = False

    monkeypatch.setattr(GPT2ish, "__init__", init_marking_final_norm)
    session = build_session(config(tmp_path, system=SystemConfig(default_freeze=True)))
    trainable = [n for n, p in session.model.named_parameters() if p.requires_grad]
    assert trainable == ["ln_f.weight", "ln_f.bias"]
    grouped = session.groups.decay + session.groups.no_decay
    assert [n for n, _ in grouped] == trainable


def test_freezing_everything_is_refused(tmp_path) -> None:
    with pytest.raises(UsageError, match="every parameter is frozen"):
        build_session(config(tmp_path, system=SystemConfig(default_freeze=True)))


def test_ignore_optimizer_loads_weights_and_starts_a_fresh_optimizer(tmp_path) -> None:
    first = build_session(config(tmp_path))
    Trainer(first).fit()
    trained = {k: v.clone() for k, v in first.model.state_dict().items()}
    cfg = config(tmp_path, optim=OptimConfig(ignore_optimizer=True))
    again = build_session(cfg)
    assert not again.optimizer.state  # fresh: no moments yet
    assert any("fresh optimizer" in note for note in again.notes)
    for key, value in again.model.state_dict().items():
        assert torch.equal(value, trained[key])


def test_a_fresh_optimizer_warms_up_again_and_a_resume_keeps_that_warmup(tmp_path) -> None:
    warm = OptimConfig(optimizer_warmup_steps=4, optimizer_warmup_fraction=0.25)
    Trainer(build_session(config(tmp_path, optim=warm))).fit()  # 2 steps
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=4)
    fresh = build_session(config(tmp_path, io=io, optim=replace(warm, ignore_optimizer=True)))
    assert fresh.schedule.warmup_from == 2 and fresh.runner.step == 2
    assert any("LR warmup restarts at step 2" in note for note in fresh.notes)
    peak = fresh.cfg.optim.lr
    assert lr_at(2, fresh.schedule) == 0.25 * peak < lr_at(3, fresh.schedule) < peak
    Trainer(fresh).fit()  # steps 2 and 3: half way through the new warmup
    assert fresh.optimizer.param_groups[0]["lr"] == lr_at(3, fresh.schedule) < peak
    io = RunIOConfig(out_dir=str(tmp_path / "out"), max_steps=8)
    resumed = build_session(config(tmp_path, io=io, optim=warm))
    assert resumed.schedule.warmup_from == 2 and resumed.runner.step == 4
    assert lr_at(4, resumed.schedule) < peak == lr_at(6, resumed.schedule)


def test_size_flag_contradicting_the_checkpoint_is_refused(tmp_path) -> None:
    Trainer(build_session(config(tmp_path))).fit()
    bigger = ModelConfig(num_blocks=3, embed_dim=32, num_heads=2, context_len=64)
    with pytest.raises(UsageError, match="--num-blocks 3 contradicts the checkpoint"):
        build_session(config(tmp_path, model=bigger))


def test_changed_optimizer_is_refused_unless_ignored(tmp_path) -> None:
    Trainer(build_session(config(tmp_path))).fit()
    with pytest.raises(UsageError, match="--optimizer adamw, not sgd"):
        build_session(config(tmp_path, optim=OptimConfig(optimizer="sgd")))
    session = build_session(
        config(tmp_path, optim=OptimConfig(optimizer="sgd", ignore_optimizer=True))
    )
    assert isinstance(session.optimizer, torch.optim.SGD)


def test_missing_initial_model_is_a_usage_error(tmp_path) -> None:
    cfg = config(
        tmp_path,
        io=RunIOConfig(out_dir=str(tmp_path / "out"), initial_model=str(tmp_path / "nope.lmp")),
    )
    with pytest.raises(UsageError, match=r"--initial-model .*nope.lmp: no such file"):
        build_session(cfg)


def test_rows_are_packed_unless_turned_off_or_unsupported(tmp_path) -> None:
    from lmplay.models.registry import Experiment

    assert build_session(config(tmp_path)).built.pack_len == 64  # the context length
    plain = build_session(config(tmp_path, batch=BatchConfig(batch_size=4, no_packing=True)))
    assert plain.built.pack_len is None

    class OneSamplePerRow(torch.nn.Module):
        def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
            return input_ids

    assert not Experiment("plain", "no packing support", OneSamplePerRow).packs_rows
