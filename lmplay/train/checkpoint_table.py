"""What a checkpoint holds: the one table of a run's components, built in one place.

`checkpoint_table` receives every component of a run and returns the `CheckpointMap` that both
saving and loading walk; nothing adds to or changes the table afterwards. Each entry is
`{"state_args": what rebuilds it, "state": what restores it}`:

| entry        | state_args                                     | state                        |
|--------------|------------------------------------------------|------------------------------|
| model        | exp, model_args, experiment extras, lora       | weights (whole, if sharded)  |
| optimizer    | name, lr, weight_decay, decay groups           | moments (whole, if sharded)  |
| plan         | the plan as written, its folder                | stage, batcher cursor        |
| runner       | effective config, data fingerprints, origin    | steps, samples, tokens       |
| lr_schedule  | the schedule's settings                        | step, warmup start           |
| stats        | stats file, run name                           | records per kind             |
| stop_rules   | the rules of each stage                        | windows, patience            |
| best         | -                                              | best loss so far             |
| grad_scaler  | - (only under fp16)                            | loss scale                   |
| rng          | -                                              | every rank's generators      |
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

import torch

from lmplay.config import RunConfig
from lmplay.plan.format import TrainingPlan
from lmplay.plan.progress import PlanProgress
from lmplay.stats.recorder import StatsRecorder
from lmplay.train.best import BestCheckpoint
from lmplay.train.checkpoint import CheckpointMap, Entry
from lmplay.train.components import StepState
from lmplay.train.distributed.state import model_state, optimizer_state, rng_state
from lmplay.train.distributed.world import World
from lmplay.train.model_setup import BuiltModel
from lmplay.train.optim import DecayGroups
from lmplay.train.resume import ProgressLoader
from lmplay.train.runner import RunnerState
from lmplay.train.schedule import Schedule
from lmplay.train.stopping import StopRules


def checkpoint_table(
    *,
    cfg: RunConfig,
    built: BuiltModel,
    optimizer: torch.optim.Optimizer,
    groups: DecayGroups,
    plan: TrainingPlan,
    progress: PlanProgress,
    load_progress: ProgressLoader | None,
    runner: RunnerState,
    runner_args: dict[str, Any],
    schedule: Schedule,
    schedule_position: StepState,
    stats: StatsRecorder,
    stop_rules: StopRules,
    best: BestCheckpoint,
    scaler: torch.amp.GradScaler | None,
    world: World,
) -> CheckpointMap:
    """The run's components in load order: the runner before the schedule that checks its
    step, the RNGs last so that nothing built during loading draws from the restored generators.

    `load_progress` replaces the plan's own loading where a run adopts stored progress
    differently (a changed plan keeps its unchanged stages); `runner_args` describe the run
    (effective config, data fingerprints, the --initial-model it started from).
    """
    optimizer_args = {
        "name": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay_value(),
        "groups": groups.table(),
    }
    schedule_args = {k: v for k, v in asdict(schedule).items() if k != "warmup_from"}
    entries = {
        "model": Entry(model_state(built.model), built.state_args()),
        "optimizer": Entry(optimizer_state(built.model, optimizer), optimizer_args),
        "plan": Entry(progress, {"plan": plan.raw, "base_dir": plan.base_dir}, load_progress),
        "runner": Entry(runner, runner_args),
        "lr_schedule": Entry(schedule_position, schedule_args),
        "stats": Entry(stats, {"path": str(stats.path), "run": cfg.run_name()}),
        "stop_rules": Entry(stop_rules, stop_rules.state_args()),
        "best": Entry(best, {}),
    }
    if scaler is not None:
        entries["grad_scaler"] = Entry(scaler, {})
    entries["rng"] = Entry(rng_state(world), {})
    return CheckpointMap(entries)
