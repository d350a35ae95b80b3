"""Stop rules: the decisions on constructed losses, then real runs that stop and resume."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from lmp_testing import one_stage_plan, tiny_run_config

from lmplay.config import RunIOConfig, StopConfig
from lmplay.errors import UsageError
from lmplay.plan.format import parse_plan
from lmplay.stats.runs import load_stats
from lmplay.train import saves as saves_module
from lmplay.train import trainer as trainer_module
from lmplay.train.session import build_session
from lmplay.train.stopping import StopRules
from lmplay.train.trainer import Trainer
from lmplay.train.validation import ValidationScores


def plan(**stage_keys: object):
    return parse_plan(
        {
            "datasets": {"a": {"bundled": "shakespeare"}, "b": {"bundled": "shakespeare"}},
            "stages": [{"datasets": ["a"], **stage_keys}, {"datasets": ["b"]}],
        },
        origin="p.json",
    )


def test_loss_rule_needs_a_full_window_and_the_minimum_steps_and_epochs() -> None:
    rules = StopRules(plan(), StopConfig(stop_at_loss=2.0, stop_loss_window=3, min_steps=5))
    fired = [rules.after_step(loss, epochs_done=1.0) for loss in [1.0, 1.0, 3.0, 1.0, 1.5]]
    # the window [1, 1] is not full; [1, 1, 3] averages 5/3 but only after step 5 may it fire
    assert fired[:4] == [None] * 4
    assert fired[4] is not None and fired[4].reason == "loss_target"
    assert "1.8333 <= 2" in fired[4].message  # mean of 3.0, 1.0, 1.5

    waiting = StopRules(plan(), StopConfig(stop_at_loss=2.0, stop_loss_window=1, min_epochs=1.5))
    assert waiting.after_step(0.5, epochs_done=1.4) is None
    assert waiting.after_step(0.5, epochs_done=1.5).reason == "loss_target"


def test_stage_keys_override_the_flags_and_each_stage_starts_afresh() -> None:
    rules = StopRules(plan(stop_at_loss=5.0, stop_loss_window=2), StopConfig(stop_at_loss=1.0))
    assert rules.after_step(4.0, 0.1) is None
    assert rules.after_step(4.0, 0.2).reason == "loss_target"  # the stage's 5.0, not the flag
    rules.begin_stage(1)  # stage 2 has no keys: the flag's 1.0 and the default window of 20
    assert rules.stop is None and rules.stage_steps == 0
    assert all(rules.after_step(0.9, 0.5) is None for _ in range(19))
    assert rules.after_step(0.9, 0.5).reason == "loss_target"


def test_max_epochs_ends_a_stage_whatever_the_loss() -> None:
    rules = StopRules(plan(), StopConfig(max_epochs=2))
    assert rules.after_step(9.0, epochs_done=1.9) is None
    assert rules.after_step(9.0, epochs_done=2.0).reason == "max_epochs"


def test_early_stop_after_patience_validations_without_strict_improvement() -> None:
    rules = StopRules(plan(), StopConfig(early_stop_set="a", patience=2, min_steps=1))
    decisions = [rules.after_validation({"a": loss}, 0.0) for loss in (5.0, 4.0, 4.0, math.nan)]
    assert decisions[:3] == [None, None, None]  # 4.0 again is no improvement: 1 of 2
    assert decisions[3] is None  # two without improvement, but no step of the stage has run
    rules.after_step(3.0, 0.1)
    stop = rules.after_validation({"a": 4.5}, 0.1)
    assert stop.reason == "early_stop" and "not improved on 4.0000 for 3" in stop.message


def test_state_round_trip_keeps_the_window_bit_exact() -> None:
    flags = StopConfig(stop_at_loss=0.32, stop_loss_window=3)
    rules = StopRules(plan(), flags)
    for loss in (0.9, 0.1 + 1e-16, 0.2, 0.7):  # means 0.4 and 0.333: not yet
        assert rules.after_step(loss, 0.0) is None
    resumed = StopRules(plan(), flags)
    resumed.load_state_dict(rules.state_dict())
    assert list(resumed.losses) == list(rules.losses) and resumed.stage_steps == 4
    assert resumed.mean_loss() == rules.mean_loss()
    stop = resumed.after_step(0.01, 0.0)  # mean 0.303
    assert stop is not None and stop == rules.after_step(0.01, 0.0)


@pytest.mark.parametrize(
    "flags, message",
    [
        (StopConfig(early_stop_set="c"), "--early-stop-set c: not a validation set"),
        (StopConfig(min_steps=3), "--min-steps 3 has no effect"),
        (StopConfig(patience=3, stop_at_loss=1.0), "--patience 3 has no effect"),
    ],
)
def test_flags_that_cannot_work_are_refused(flags: StopConfig, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        StopRules(plan(), flags)


def snapshot_weights_per_step(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, torch.Tensor]]:
    """The model's weights after every optimizer step of the runs that follow."""
    weights: list[dict[str, torch.Tensor]] = []
    original = Trainer._step

    def step_and_snapshot(self, samples):
        result = original(self, samples)
        weights.append({k: v.detach().clone() for k, v in self.s.model.state_dict().items()})
        return result

    monkeypatch.setattr(Trainer, "_step", step_and_snapshot)
    return weights


def first_step_at_or_below(means: list[float], target: float) -> int:
    return next(i for i, mean in enumerate(means, start=1) if mean <= target)


def test_loss_rule_stops_at_the_first_step_that_meets_it_also_across_a_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    window, free_steps = 3, 7
    reference = tmp_path / "reference"
    reference.mkdir()
    one_stage_plan(reference, documents=40)
    io = RunIOConfig(out_dir=str(reference / "out"), validation_interval=1000, max_steps=free_steps)
    weights = snapshot_weights_per_step(monkeypatch)
    free = build_session(tiny_run_config(reference, io=io))
    Trainer(free).fit()
    losses = [record["loss"] for record in free.stats.train]
    means = [math.inf] * (window - 1)  # the rule waits for a full window
    means += [math.fsum(losses[i - window : i]) / window for i in range(window, len(losses) + 1)]
    # The target is the mean at the last step whose mean is lower than every earlier one, so
    # that step, not the ones before it, is the first to meet it.
    stop_at = max(
        k for k in range(window + 1, free_steps + 1) if means[k - 1] < min(means[: k - 1])
    )
    target = means[stop_at - 1]
    assert first_step_at_or_below(means, target) == stop_at
    weights_at_stop = weights[stop_at - 1]

    run = tmp_path / "run"
    run.mkdir()
    one_stage_plan(run, documents=40)
    rule = StopConfig(stop_at_loss=target, stop_loss_window=window)
    paused_io = RunIOConfig(
        out_dir=str(run / "out"), validation_interval=1000, max_steps=stop_at - 1
    )
    paused = build_session(tiny_run_config(run, io=paused_io, stop=rule))
    Trainer(paused).fit()  # stops by --max-steps one step before the rule would
    assert paused.runner.step == stop_at - 1 and paused.stats.stops[-1]["reason"] == "max_steps"

    resumed_io = RunIOConfig(out_dir=str(run / "out"), validation_interval=1000)
    resumed = build_session(tiny_run_config(run, io=resumed_io, stop=rule))
    assert list(resumed.stop_rules.losses) == losses[stop_at - 1 - window : stop_at - 1]
    assert Trainer(resumed).fit() == 0
    assert resumed.runner.step == stop_at
    assert resumed.progress.finished  # the rule ended the plan's only stage
    assert [r["loss"] for r in resumed.stats.train] == losses[:stop_at]
    for key, tensor in resumed.model.state_dict().items():
        assert torch.equal(tensor, weights_at_stop[key]), key
    stats = load_stats(resumed.cfg.stats_path())
    assert [s["reason"] for s in stats.stops] == ["max_steps", "loss_target"]
    assert stats.stop_reason == "loss_target" and stats.stops[-1]["steps"] == stop_at


def test_early_stop_ends_the_stage_after_patience_validations_and_keeps_the_best(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    scripted = iter([6.0, 5.0, 5.5, 5.0, 5.2, 4.0, 3.0])  # one loss per validation point

    def score(*_args, **_kwargs) -> ValidationScores:
        return ValidationScores(next(scripted), 0.1, 0.1, 10)

    monkeypatch.setattr(trainer_module, "score_validation_set", score)
    best_writes: list[int] = []
    save = saves_module.save_checkpoint

    def spy(path, components):
        if path.name.endswith(".best.lmp"):
            best_writes.append(components["runner"]["state"]["step"])
        save(path, components)

    monkeypatch.setattr(saves_module, "save_checkpoint", spy)
    io = RunIOConfig(out_dir=str(tmp_path / "out"), validation_interval=4)  # every step
    rules = StopConfig(early_stop_set="corpus", patience=3, keep_best=True)
    session = build_session(tiny_run_config(tmp_path, documents=40, io=io, stop=rules))
    assert Trainer(session).fit() == 0
    (records,) = session.stats.validation.values()
    # 6.0 at step 0, best 5.0 at step 1, then 5.5, 5.0, 5.2: three without improvement
    assert [r["steps"] for r in records] == [0, 1, 2, 3, 4]
    assert session.runner.step == 4 and session.progress.finished
    stop = session.stats.stops[-1]
    assert (stop["reason"], stop["steps"]) == ("early_stop", 4)
    assert best_writes == [0, 1]  # improvements only; the equal 5.0 at step 3 is not one
    best = torch.load(tmp_path / "out" / "gpt2ish.best.lmp", weights_only=True)
    assert best["components"]["best"]["state"]["loss"] == 5.0


def test_the_start_summary_names_each_stage_rule() -> None:
    rules = StopRules(plan(stop_at_loss=2.5, min_epochs=1), StopConfig(max_epochs=3))
    assert rules.describe(["a", "b"]) == [
        "stop stage 'a' at: loss <= 2.5 (mean of 20 steps), after 0 steps and 1 epochs, "
        "at most 3 epochs",
        "stop stage 'b' at: at most 3 epochs",
    ]


def test_a_crash_after_a_rule_fired_resumes_into_the_stage_end_without_training(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def crash_at_stage_end(where: str) -> None:
        if where == "stage_end":
            raise RuntimeError("crash")

    monkeypatch.setattr(trainer_module, "pause_point", crash_at_stage_end)
    io = RunIOConfig(out_dir=str(tmp_path / "out"), validation_interval=1000, save_interval=4)
    rule = StopConfig(stop_at_loss=100.0, stop_loss_window=2)  # fires at step 2
    with pytest.raises(RuntimeError, match="crash"):
        Trainer(build_session(tiny_run_config(tmp_path, io=io, stop=rule))).fit()
    monkeypatch.undo()
    resumed = build_session(tiny_run_config(tmp_path, io=io, stop=rule))
    assert resumed.runner.step == 2 and resumed.stop_rules.stop is not None  # saved at step 2
    assert Trainer(resumed).fit() == 0
    assert resumed.runner.step == 2 and resumed.progress.finished
    assert [s["reason"] for s in resumed.stats.stops] == ["loss_target"]
