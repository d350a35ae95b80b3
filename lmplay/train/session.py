"""A run's setup as a recipe: everything `Trainer` needs, built from a RunConfig in named steps.

    placement -> source -> model -> optimizer -> schedule -> plan -> stats -> components -> restore

Each step is one function: where the run computes (`placement.py`), what it starts from and
what it takes from there (`resume.py`), the model (`model_setup.py`), what a checkpoint holds
(`checkpoint_table.py`). Resume order: `--model` if the file exists, else `--initial-model`
(read, never written), else a fresh start.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.config import RunConfig
from lmplay.models import ModelArgs
from lmplay.plan.format import TrainingPlan
from lmplay.plan.progress import PlanProgress
from lmplay.plan.registry import load_plan
from lmplay.run_files import RunFiles
from lmplay.state import seed_everything
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.trackers import Trackers
from lmplay.train import resume
from lmplay.train.best import BestCheckpoint, best_set_name
from lmplay.train.checkpoint import CheckpointMap
from lmplay.train.checkpoint_table import checkpoint_table
from lmplay.train.components import StepState
from lmplay.train.curriculum import StageSettings, stage_settings
from lmplay.train.fingerprint import dataset_fingerprints
from lmplay.train.model_setup import BuiltModel, build_model
from lmplay.train.optim import DecayGroups, build_optimizer
from lmplay.train.placement import Placement, resolve_placement
from lmplay.train.resume import Source
from lmplay.train.runner import RunnerState
from lmplay.train.schedule import Schedule
from lmplay.train.stopping import StopRules


@dataclass
class Session:
    """A run ready to train: where it computes, what it trains, on what, and how it saves."""

    cfg: RunConfig
    placement: Placement
    files: RunFiles  # every path the run writes
    built: BuiltModel  # the model, its identity and the module the step calls
    optimizer: torch.optim.Optimizer
    groups: DecayGroups
    schedule: Schedule  # the run-wide schedule; a stage may bring its own (`stage_settings`)
    plan: TrainingPlan
    progress: PlanProgress
    stage_settings: list[StageSettings]
    runner: RunnerState
    stats: StatsRecorder
    stop_rules: StopRules  # when a stage ends early
    best: BestCheckpoint  # the best validation loss so far, for the best checkpoint
    checkpoint_map: CheckpointMap  # every component, saved and loaded through this one table
    source: Source  # what the run started or resumed from
    notes: list[str]

    @property
    def model(self) -> nn.Module:
        return self.built.model

    @property
    def train_model(self) -> nn.Module:
        return self.built.train_model

    @property
    def model_args(self) -> ModelArgs:
        return self.built.args

    @property
    def resumed_from(self) -> Path | None:
        return self.source.path if self.source.resumes else None

    @property
    def started_from(self) -> Path | None:
        """--initial-model: a new run from these weights."""
        return self.source.path if self.source.from_initial else None


def build_session(
    cfg: RunConfig, placement: Placement | None = None, plan: TrainingPlan | None = None
) -> Session:
    """The run `cfg` describes, at `placement` (default: resolved from `cfg` in one process),
    on `plan` (default: loaded from `cfg`); resumed from its checkpoint when one exists."""
    placement = placement or resolve_placement(cfg.system)
    plan = plan or load_plan(cfg.data.training_plan)
    notes: list[str] = []
    source = resume.find_source(cfg, plan)
    seed_everything(cfg.data.seed)
    built = build_model(cfg, placement, source, notes)
    optimizer, groups = _optimizer(cfg, built, placement)
    schedule = run_schedule(cfg)
    course = _plan_course(cfg, plan, built, source, notes)
    stats = _stats(cfg, plan, built, placement, course.initial_model)
    runner = RunnerState()
    position = StepState(
        lambda: runner.step, restart_warmup=source.fresh_optimizer_on_trained_weights(cfg)
    )
    stop_rules = StopRules(plan, cfg.stop)
    best = BestCheckpoint(best_set_name(plan, cfg.stop))
    table = checkpoint_table(
        cfg=cfg,
        built=built,
        optimizer=optimizer,
        groups=groups,
        plan=plan,
        progress=course.progress,
        load_progress=course.load_progress,
        runner=runner,
        runner_args=_runner_args(cfg, built, course),
        schedule=schedule,
        schedule_position=position,
        stats=stats,
        stop_rules=stop_rules,
        best=best,
        scaler=placement.precision.scaler,
        world=placement.world,
    )
    _restore(table, source, cfg, built, groups, course, stats, notes)
    if source.fresh_optimizer_on_trained_weights(cfg):
        warmup = f"; LR warmup restarts at step {runner.step}" if schedule.warmup_steps else ""
        notes.append(f"fresh optimizer state (weights loaded){warmup}")
    return Session(
        cfg=cfg,
        placement=placement,
        files=cfg.run_files(),
        built=built,
        optimizer=optimizer,
        groups=groups,
        schedule=dataclasses.replace(schedule, warmup_from=position.warmup_from),
        plan=plan,
        progress=course.progress,
        stage_settings=course.settings,
        runner=runner,
        stats=stats,
        stop_rules=stop_rules,
        best=best,
        checkpoint_map=table,
        source=source,
        notes=notes,
    )


def _optimizer(
    cfg: RunConfig, built: BuiltModel, placement: Placement
) -> tuple[torch.optim.Optimizer, DecayGroups]:
    return build_optimizer(
        cfg.optim.optimizer,
        built.model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay_value(),
        device=placement.device,
    )


@dataclass
class PlanCourse:
    """Where the run stands in its plan and what it may take from its source about that."""

    progress: PlanProgress
    load_progress: resume.ProgressLoader | None  # None: the history starts over
    settings: list[StageSettings]  # each stage's settings, checked before any data is read
    data: dict[str, Any]  # the datasets' fingerprints, stored for the next resume to compare
    changed_data: set[str]  # datasets whose files changed since the checkpoint (allowed)
    initial_model: dict[str, Any] | None  # the --initial-model the run started from


def _plan_course(
    cfg: RunConfig, plan: TrainingPlan, built: BuiltModel, source: Source, notes: list[str]
) -> PlanCourse:
    progress = PlanProgress(plan)
    load_progress = resume.progress_loader(cfg, plan, progress, source, notes)
    settings = stage_settings(plan, cfg, built.model, built.args)
    data = dataset_fingerprints(plan.datasets)
    changed: set[str] = set()
    if load_progress is not None:  # the run goes on: what it trains on must not have changed
        changed = resume.changed_datasets(cfg, built.args, source, data, notes)
    return PlanCourse(progress, load_progress, settings, data, changed, resume.provenance(source))


def _restore(
    table: CheckpointMap,
    source: Source,
    cfg: RunConfig,
    built: BuiltModel,
    groups: DecayGroups,
    course: PlanCourse,
    stats: StatsRecorder,
    notes: list[str],
) -> None:
    """Load what the run takes from its source; a stage whose data changed starts over, and a
    run that does not go on starts its stats afresh."""
    keep_history = course.load_progress is not None
    resume.restore(table, source, cfg, built.model, groups, keep_history, notes)
    resume.restart_stage_on_changed_data(course.progress, course.changed_data, notes)
    if not keep_history:
        stats.reset()


def run_schedule(cfg: RunConfig) -> Schedule:
    """The run-wide LR schedule of the optim flags (a stage's own schedule replaces it)."""
    decay_steps = cfg.optim.decay_steps or cfg.io.max_steps
    warmup = cfg.optim.warmup_steps()
    return Schedule(
        peak_lr=cfg.optim.lr,
        warmup_steps=warmup,
        warmup_start_fraction=cfg.optim.optimizer_warmup_fraction,
        kind=cfg.optim.lr_schedule,
        min_lr=cfg.optim.min_lr,
        decay_steps=None if decay_steps is None else max(1, decay_steps - warmup),
    )


def _stats(
    cfg: RunConfig,
    plan: TrainingPlan,
    built: BuiltModel,
    placement: Placement,
    initial_model: dict[str, Any] | None,
) -> StatsRecorder:
    """The stats recorder (rank 0 writes) with the run's description in its header."""
    files = cfg.run_files()
    meta: dict[str, Any] = {
        "plan": plan.name,
        "model_args": built.args.to_dict(),
        "batch_size": cfg.batch.batch_size,
        "mini_batch_size": cfg.batch.mini_batch(),
        "optimizer": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "seed": cfg.data.seed,
    }
    if initial_model is not None:
        meta["initial_model"] = initial_model
    return StatsRecorder(
        files.stats,
        run=cfg.run_name(),
        exp=built.exp,
        model=files.checkpoint.name,
        meta=meta,
        write=placement.world.is_main,
        trackers=Trackers.from_names(cfg.io.trackers(), files),
    )


def _runner_args(cfg: RunConfig, built: BuiltModel, course: PlanCourse) -> dict[str, Any]:
    """The run's description in its checkpoint: what a resume compares, where it started."""
    config = resume.effective_config(cfg, built.args)
    args: dict[str, Any] = {"config": config, "data": course.data}
    if course.initial_model is not None:  # kept by every later save, so a resume says it too
        args["initial_model"] = course.initial_model
    return args
