"""Build everything a run needs from a RunConfig, resuming from a checkpoint when one exists.

Resume order: `--model` if the file exists, else `--initial-model` (read, never written), else a
fresh start. The checkpoint's model architecture and sizes win over flags; a flag that
contradicts them is an error rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.config import RunConfig
from lmplay.errors import CheckpointError, UsageError
from lmplay.models import ModelArgs, get_experiment
from lmplay.plan.format import TrainingPlan
from lmplay.plan.progress import PlanProgress
from lmplay.plan.registry import load_plan, plan_from_checkpoint
from lmplay.state import seed_everything
from lmplay.stats.recorder import StatsRecorder
from lmplay.train.checkpoint import CheckpointMap, Entry, load_checkpoint
from lmplay.train.components import ModelState, OptimizerState, RngState, StepState
from lmplay.train.loss import LossModel
from lmplay.train.memory import enable_activation_checkpointing
from lmplay.train.optim import DecayGroups, build_optimizer
from lmplay.train.runner import RunnerState
from lmplay.train.schedule import Schedule
from lmplay.train.step import Precision


@dataclass
class Session:
    cfg: RunConfig
    device: torch.device
    precision: Precision
    exp: str
    model_args: ModelArgs
    model: nn.Module
    train_model: nn.Module  # LossModel: `model` and its chunked loss (forward compiled if asked)
    optimizer: torch.optim.Optimizer
    groups: DecayGroups
    schedule: Schedule
    plan: TrainingPlan
    progress: PlanProgress
    runner: RunnerState
    stats: StatsRecorder
    checkpoint_map: CheckpointMap  # every component, saved and loaded through this one table
    resumed_from: Path | None
    notes: list[str]
    pack_len: int | None = None  # row length when short samples share rows; None: one per row


def _pack_len(cfg: RunConfig, exp: str, model_args: ModelArgs, notes: list[str]) -> int | None:
    if cfg.batch.no_packing:
        return None
    if not get_experiment(exp).packs_rows:
        notes.append(f"{exp} takes no positions/segments: one sample per row, padded")
        return None
    return model_args.context_len


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError as error:
        raise UsageError(f"--device {name}: not a torch device (cpu, cuda, cuda:1, mps)") from error
    if device.type == "cuda" and not torch.cuda.is_available():
        raise UsageError(f"--device {name}: CUDA is not available on this machine; use cpu")
    return device


def resolve_precision(cfg: RunConfig, device: torch.device) -> Precision:
    if not cfg.system.amp:
        return Precision(device.type)
    wanted = cfg.system.amp_dtype
    if device.type == "cuda" and wanted == "auto":
        wanted = "bf16" if torch.cuda.is_bf16_supported() else "fp16"
    if wanted == "fp16":
        if device.type not in ("cuda", "cpu"):
            raise UsageError(f"--amp-dtype fp16 runs on cuda or cpu, not {device.type}")
        return Precision(device.type, torch.float16, torch.amp.GradScaler(device.type))
    return Precision(device.type, torch.bfloat16)


def find_checkpoint(cfg: RunConfig) -> Path | None:
    path = cfg.model_path()
    if path.exists():
        return path
    if cfg.io.initial_model:
        initial = Path(cfg.io.initial_model)
        if not initial.exists():
            raise UsageError(f"--initial-model {initial}: no such file")
        return initial
    return None


def build_session(cfg: RunConfig) -> Session:
    device = resolve_device(cfg.system.device)
    precision = resolve_precision(cfg, device)
    source = find_checkpoint(cfg)
    stored = load_checkpoint(source)["components"] if source else {}
    notes: list[str] = []
    seed_everything(cfg.data.seed)

    exp, model_args = _model_identity(cfg, stored.get("model"), source)
    model = get_experiment(exp).build(model_args)
    _apply_freezing(model, cfg.system.default_freeze)
    model.to(device)

    from_initial = source is not None and source != cfg.model_path()
    plan, progress, load_progress = _plan_and_progress(cfg, stored.get("plan"), notes, from_initial)
    optimizer, groups = build_optimizer(
        cfg.optim.optimizer,
        model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay_value(),
        device=device,
    )
    runner = RunnerState()
    stats = StatsRecorder(
        cfg.stats_path(),
        run=cfg.run_name(),
        exp=exp,
        model=cfg.model_path().name,
        meta=_stats_meta(cfg, plan, model_args),
    )
    schedule = _schedule(cfg)
    checkpoint_map = _checkpoint_map(
        cfg, exp, model_args, model, optimizer, groups, schedule, plan, progress, runner, stats
    )
    if precision.scaler is not None:
        checkpoint_map.entries["grad_scaler"] = Entry(precision.scaler, {})
    keep_history = load_progress is not None
    if source is not None:
        skip = _components_to_skip(cfg, stored, source, keep_history, notes)
        checkpoint_map.entries["plan"].load = load_progress
        notes.extend(checkpoint_map.load(stored, source, skip))
    if not keep_history:
        stats.reset()
    if cfg.io.reset_history and source is not None:
        notes.append("history reset: plan progress, counters and stats start over")

    if cfg.system.activation_checkpointing:
        enable_activation_checkpointing(model)
    forward_fn = None
    if cfg.system.compile_model:
        forward_fn = torch.compile(model.forward, mode=cfg.system.compile_mode)
    train_model = LossModel(model, forward_fn=forward_fn)
    return Session(
        cfg=cfg,
        device=device,
        precision=precision,
        exp=exp,
        model_args=model_args,
        model=model,
        train_model=train_model,
        optimizer=optimizer,
        groups=groups,
        schedule=schedule,
        plan=plan,
        progress=progress,
        runner=runner,
        stats=stats,
        checkpoint_map=checkpoint_map,
        resumed_from=source,
        notes=notes,
        pack_len=_pack_len(cfg, exp, model_args, notes),
    )


HISTORY = ("plan", "runner", "lr_schedule", "stats", "rng", "grad_scaler")
"""Components that say where a run is, as opposed to what it has learned (weights, moments)."""


def _checkpoint_map(
    cfg: RunConfig,
    exp: str,
    model_args: ModelArgs,
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    groups: DecayGroups,
    schedule: Schedule,
    plan: TrainingPlan,
    progress: PlanProgress,
    runner: RunnerState,
    stats: StatsRecorder,
) -> CheckpointMap:
    """The run's components in load order: the runner before the schedule that checks its step,
    the RNGs last so that nothing built during loading draws from the restored generators."""
    optimizer_args = {
        "name": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "weight_decay": cfg.optim.weight_decay_value(),
        "groups": groups.table(),
    }
    return CheckpointMap(
        {
            "model": Entry(ModelState(model), {"exp": exp, "model_args": model_args.to_dict()}),
            "optimizer": Entry(OptimizerState(optimizer), optimizer_args),
            "plan": Entry(progress, {"plan": plan.raw, "base_dir": plan.base_dir}),
            "runner": Entry(runner, {"config": cfg.to_dict()}),
            "lr_schedule": Entry(StepState(lambda: runner.step), schedule.to_dict()),
            "stats": Entry(stats, {"path": str(cfg.stats_path()), "run": cfg.run_name()}),
            "rng": Entry(RngState(), {}),
        }
    )


def _components_to_skip(
    cfg: RunConfig,
    stored: dict[str, Any],
    source: Path,
    keep_history: bool,
    notes: list[str],
) -> set[str]:
    """What this run does not take from the checkpoint: a fresh optimizer, or fresh history."""
    skip: set[str] = set()
    if cfg.optim.ignore_optimizer or "optimizer" not in stored:
        skip.add("optimizer")
        notes.append("fresh optimizer state (weights loaded); LR warmup recommended")
    else:
        _check_optimizer_name(stored["optimizer"], cfg, source)
    if not keep_history:
        skip.update(HISTORY)
    elif "grad_scaler" not in stored:
        skip.add("grad_scaler")  # fp16 switched on for a run that had none: a fresh scale
    return skip


def _model_identity(
    cfg: RunConfig, stored: dict[str, Any] | None, source: Path | None
) -> tuple[str, ModelArgs]:
    if stored is None:
        experiment = get_experiment(cfg.model.exp)
        args = experiment.args(**cfg.model.size_overrides())
        return cfg.model.exp, dataclasses.replace(args, dropout=cfg.model.dropout)
    exp = _stored_arg(stored, "exp", "model", source)
    raw_args = _stored_arg(stored, "model_args", "model", source)
    if not isinstance(raw_args, dict):
        raise CheckpointError(f"checkpoint {source}: component 'model' has malformed model_args")
    args = ModelArgs.from_dict(raw_args)
    if exp != cfg.model.exp:
        raise CheckpointError(
            f"checkpoint {source} holds a '{exp}' model but --exp is '{cfg.model.exp}'; "
            f"pass --exp {exp}, or a different --model to start a new run"
        )
    for key, value in cfg.model.size_overrides().items():
        if value is not None and value != getattr(args, key):
            flag = "--" + key.replace("_", "-")
            raise UsageError(
                f"{flag} {value} contradicts the checkpoint {source} ({flag} "
                f"{getattr(args, key)}); drop the flag or use a different --model"
            )
    return exp, args


def _check_optimizer_name(stored: dict[str, Any], cfg: RunConfig, source: Path) -> None:
    stored_name = _stored_arg(stored, "name", "optimizer", source)
    if stored_name != cfg.optim.optimizer:
        raise UsageError(
            f"checkpoint {source} was trained with --optimizer {stored_name}, not "
            f"{cfg.optim.optimizer}; pass --optimizer {stored_name} or --ignore-optimizer"
        )


def _stored_arg(stored: dict[str, Any], key: str, component: str, source: Path | None) -> Any:
    try:
        return stored["state_args"][key]
    except (KeyError, TypeError):
        raise CheckpointError(
            f"checkpoint {source}: component '{component}' is malformed (no state_args "
            f"'{key}'); the file was left as it is"
        ) from None


def _plan_and_progress(
    cfg: RunConfig, stored: dict[str, Any] | None, notes: list[str], from_initial: bool
) -> tuple[TrainingPlan, PlanProgress, Callable[[dict[str, Any]], None] | None]:
    """The plan, its progress, and how to load the stored progress (None: the history restarts)."""
    plan = load_plan(cfg.data.training_plan)
    progress = PlanProgress(plan)
    if stored is None or cfg.io.reset_history:
        return plan, progress, None
    try:
        stored_plan = plan_from_checkpoint(stored["state_args"], origin="stored in the checkpoint")
    except (KeyError, TypeError) as error:
        raise CheckpointError(
            f"checkpoint plan component is malformed (missing {error}); pass --reset-history to "
            "keep only the weights, or a different --model"
        ) from None
    old, new = stored_plan.stage_fingerprints(), plan.stage_fingerprints()
    if old == new:
        return plan, progress, progress.load_state_dict
    if from_initial:
        notes.append(f"plan '{plan.name}' starts from the weights of --initial-model")
        return plan, progress, None
    if not cfg.data.override_plan:
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), len(old))
        change = f"from stage {first + 1} on" if first < len(new) else "stages removed"
        raise UsageError(
            f"--training-plan {cfg.data.training_plan} differs ({change}) from the plan "
            f"'{stored_plan.name}' this run was trained with; pass --override-plan to switch "
            "plans (completed unchanged stages stay done) or a different --model"
        )

    def adopt(state: dict[str, Any]) -> None:
        notes.append("plan changed (--override-plan): " + progress.adopt(state))

    return plan, progress, adopt


def _apply_freezing(model: nn.Module, default_freeze: bool) -> None:
    """`freeze = True` on a parameter freezes it; --default-freeze freezes all but `False`."""
    for param in model.parameters():
        marked = getattr(param, "freeze", None)
        frozen = marked if marked is not None else default_freeze
        if frozen:
            param.requires_grad_(False)
    if not any(p.requires_grad for p in model.parameters()):
        raise UsageError(
            "every parameter is frozen (--default-freeze freezes all but parameters marked "
            "`freeze = False`); mark some trainable or drop --default-freeze"
        )


def _schedule(cfg: RunConfig) -> Schedule:
    decay_steps = cfg.optim.decay_steps or cfg.io.max_steps
    if cfg.optim.lr_schedule != "constant" and decay_steps is None:
        raise UsageError(
            f"--lr-schedule {cfg.optim.lr_schedule} needs --decay-steps or --max-steps"
        )
    warmup = cfg.optim.warmup_steps()
    return Schedule(
        peak_lr=cfg.optim.lr,
        warmup_steps=warmup,
        warmup_start_fraction=cfg.optim.optimizer_warmup_fraction,
        kind=cfg.optim.lr_schedule,
        min_lr=cfg.optim.min_lr,
        decay_steps=None if decay_steps is None else max(1, decay_steps - warmup),
    )


def _stats_meta(cfg: RunConfig, plan: TrainingPlan, args: ModelArgs) -> dict[str, Any]:
    return {
        "plan": plan.name,
        "model_args": args.to_dict(),
        "batch_size": cfg.batch.batch_size,
        "mini_batch_size": cfg.batch.mini_batch(),
        "optimizer": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "seed": cfg.data.seed,
    }
