"""Build everything a run needs from a RunConfig, resuming from a checkpoint when one exists.

Resume order: `--model` if the file exists, else `--initial-model` (read, never written), else a
fresh start. The checkpoint's model architecture and sizes win over flags; a flag that
contradicts them is an error rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from lmplay.config import DEFAULT_OUT_DIR, RunConfig
from lmplay.errors import CheckpointError, UsageError
from lmplay.models import Experiment, ModelArgs, canonical_name, get_experiment
from lmplay.plan.format import TrainingPlan
from lmplay.plan.progress import PlanProgress
from lmplay.plan.registry import load_plan, plan_from_checkpoint
from lmplay.state import seed_everything
from lmplay.stats.recorder import StatsRecorder
from lmplay.train.adapters import attach_adapters
from lmplay.train.best import BestCheckpoint, best_set_name
from lmplay.train.checkpoint import CheckpointMap, Entry, load_checkpoint
from lmplay.train.components import ModelState, OptimizerState, RngState, StepState
from lmplay.train.curriculum import StageSettings, stage_settings
from lmplay.train.distributed import (
    SINGLE,
    World,
    adapt_checkpoint_map,
    local_device,
    parallelize,
    seed_rank,
)
from lmplay.train.fingerprint import allowed_changes, check_resume, dataset_fingerprints
from lmplay.train.loss import LossModel
from lmplay.train.memory import enable_activation_checkpointing
from lmplay.train.optim import DecayGroups, build_optimizer
from lmplay.train.preflight import check_device, check_fits_in_memory
from lmplay.train.runner import RunnerState
from lmplay.train.schedule import Schedule
from lmplay.train.step import Precision
from lmplay.train.stopping import StopRules


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
    stop_rules: StopRules  # when a stage ends early; its state travels in the checkpoint
    best: BestCheckpoint  # the best validation loss so far, for <model>.best.lmp
    pack_len: int | None = None  # row length when short samples share rows; None: one per row
    experiment: Experiment | None = None  # what built `model` (an hf: one without its folder)
    world: World = SINGLE  # this process's rank among the torchrun ranks
    stage_settings: list[StageSettings] = dataclasses.field(default_factory=list)


def _pack_len(
    cfg: RunConfig, experiment: Experiment, model_args: ModelArgs, notes: list[str]
) -> int | None:
    if cfg.batch.no_packing:
        return None
    if not experiment.packs_rows:
        notes.append(f"{experiment.name} cannot pack rows (positions/segments): one sample per row")
        return None
    return model_args.context_len


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    return check_device(name)


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
    _check_old_default_location(cfg)
    if cfg.io.initial_model:
        initial = Path(cfg.io.initial_model)
        if not initial.exists():
            raise UsageError(f"--initial-model {initial}: no such file")
        return initial
    return None


def _check_old_default_location(cfg: RunConfig) -> None:
    """Refuse to start afresh beside a run of this plan saved where lmplay 0.1 put it.

    Runs without --out-dir used to share `out_gpt/EXP.lmp` whatever their plan; they now live in
    `out_gpt/PLAN/`. A checkpoint of the same plan in the old place is that run: say how to move
    it rather than silently starting over. One of another plan is another run and stays put.
    """
    if cfg.io.out_dir is not None or cfg.io.model is not None:
        return
    old = Path(DEFAULT_OUT_DIR) / cfg.model_path().name
    if not old.is_file():
        return
    try:
        stored = load_checkpoint(old)["components"]["plan"]["state_args"]
        stored_name = plan_from_checkpoint(stored, origin=str(old)).name
    except (CheckpointError, UsageError, KeyError, TypeError):
        return  # not a readable run of any plan: nothing to resume there
    if stored_name != load_plan(cfg.data.training_plan).name:
        return
    new_dir = cfg.out_dir()
    belongings = sorted(old.parent.glob(f"{old.stem}.*"))  # checkpoints, stats, stage copies
    move = f"mkdir -p {shlex.quote(str(new_dir))} && mv " + " ".join(
        shlex.quote(str(path)) for path in [*belongings, new_dir]
    )
    raise UsageError(
        f"{old} is a run of plan '{stored_name}' from before runs were kept per plan; to resume "
        f"it, move it first: {move} (or pass --model {old} --out-dir {old.parent} to keep it "
        "where it is)"
    )


def _read_source(source: Path | None) -> dict[str, Any]:
    """The checkpoint's components; a transformers folder (--initial-model) gives a model."""
    if source is None:
        return {}
    if source.is_dir():
        from lmplay.models.hf_import import import_folder

        return {"model": import_folder(source)}
    return load_checkpoint(source)["components"]


def build_session(cfg: RunConfig, world: World = SINGLE) -> Session:
    allowed = allowed_changes(cfg.data.allow_changed)
    device = local_device(resolve_device(cfg.system.device), world)
    precision = resolve_precision(cfg, device)
    source = find_checkpoint(cfg)
    stored = _read_source(source)
    notes: list[str] = []
    seed_everything(cfg.data.seed)

    exp, model_args = _model_identity(cfg, stored.get("model"), source)
    experiment = get_experiment(exp, (stored.get("model") or {}).get("state_args"))
    _check_fits(cfg, experiment, model_args, device)
    model = experiment.build(model_args)
    from_initial = source is not None and source != cfg.model_path()
    lora = attach_adapters(cfg, model, stored.get("model"), source, from_initial)
    if lora is not None:
        notes.append(lora.describe())
    _apply_freezing(model, cfg.system.default_freeze)
    model.to(device)
    seed_rank(world, cfg.data.seed)
    if cfg.system.activation_checkpointing:
        enable_activation_checkpointing(model)
    forward_fn = None
    if cfg.system.compile_model:
        forward_fn = torch.compile(model.forward, mode=cfg.system.compile_mode)
    # Wrapped (DDP) or sharded (FSDP) before the optimizer is built: FSDP replaces parameters.
    loss_model = LossModel(model, forward_fn=forward_fn, compiled_head=cfg.system.compile_model)
    train_model = parallelize(loss_model, world, device, precision.dtype)

    plan, progress, load_progress = _plan_and_progress(cfg, stored.get("plan"), notes, from_initial)
    settings = stage_settings(plan, cfg, model, model_args)  # refusals before any data is read
    data = dataset_fingerprints(plan.datasets)
    changed_data: set[str] = set()
    if load_progress is not None:  # the run goes on: what it trains on must not have changed
        changed_data = _check_unchanged(cfg, stored.get("runner"), data, allowed, source, notes)
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
        write=world.is_main,
    )
    schedule = _schedule(cfg)
    checkpoint_map = _checkpoint_map(
        cfg, exp, model_args, model, optimizer, groups, schedule, plan, progress, runner, stats
    )
    checkpoint_map.entries["runner"].state_args["data"] = data
    checkpoint_map.entries["model"].state_args.update(experiment.state_args())
    if lora is not None:
        checkpoint_map.entries["model"].state_args["lora"] = lora.to_dict()
    stop_rules = StopRules(plan, cfg.stop)
    best = BestCheckpoint(best_set_name(plan, cfg.stop))
    checkpoint_map.entries["stop_rules"] = Entry(stop_rules, stop_rules.state_args())
    checkpoint_map.entries["best"] = Entry(best, {})
    if precision.scaler is not None:
        checkpoint_map.entries["grad_scaler"] = Entry(precision.scaler, {})
    adapt_checkpoint_map(checkpoint_map.entries, world, model, optimizer)
    keep_history = load_progress is not None
    if source is not None:
        skip = _components_to_skip(cfg, stored, source, keep_history, notes)
        checkpoint_map.entries["plan"].load = load_progress
        notes.extend(checkpoint_map.load(stored, source, skip))
        _restart_stage_on_changed_data(progress, changed_data, notes)
    if not keep_history:
        stats.reset()
    schedule = _restarted_warmup(schedule, checkpoint_map, runner, source, stored, cfg, notes)
    if cfg.io.reset_history and source is not None:
        notes.append("history reset: plan progress, counters and stats start over")

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
        pack_len=_pack_len(cfg, experiment, model_args, notes),
        experiment=experiment,
        stop_rules=stop_rules,
        best=best,
        world=world,
        stage_settings=settings,
    )


HISTORY = ("plan", "runner", "lr_schedule", "stats", "rng", "grad_scaler", "stop_rules", "best")
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
    else:
        _check_optimizer_name(stored["optimizer"], cfg, source)
    if not keep_history:
        skip.update(HISTORY)
    elif "grad_scaler" not in stored:
        skip.add("grad_scaler")  # fp16 switched on for a run that had none: a fresh scale
    # Checkpoints from before stop rules and best checkpoints: nothing fired, nothing ranked.
    skip.update(name for name in ("stop_rules", "best") if name not in stored)
    return skip


def _restarted_warmup(
    schedule: Schedule,
    checkpoint_map: CheckpointMap,
    runner: RunnerState,
    source: Path | None,
    stored: dict[str, Any],
    cfg: RunConfig,
    notes: list[str],
) -> Schedule:
    """The schedule with its warmup starting where this run's optimizer started.

    A fresh optimizer on trained weights (`--ignore-optimizer`, or a checkpoint without one)
    warms up again from the run's current step; a resumed run keeps the start its checkpoint
    stored, so a warmup interrupted half way goes on where it was.
    """
    position = checkpoint_map.entries["lr_schedule"].stateful
    assert isinstance(position, StepState)
    if source is not None and (cfg.optim.ignore_optimizer or "optimizer" not in stored):
        position.warmup_from = runner.step
        warmup = f"; LR warmup restarts at step {runner.step}" if schedule.warmup_steps else ""
        notes.append(f"fresh optimizer state (weights loaded){warmup}")
    restarted = dataclasses.replace(schedule, warmup_from=position.warmup_from)
    checkpoint_map.entries["lr_schedule"].state_args = restarted.to_dict()
    return restarted


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
    # The resume check refuses a changed --dropout unless --allow-changed dropout accepts it.
    args = dataclasses.replace(ModelArgs.from_dict(raw_args), dropout=cfg.model.dropout)
    if canonical_name(str(exp)) != canonical_name(cfg.model.exp):
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


def _restart_stage_on_changed_data(
    progress: PlanProgress, changed: set[str], notes: list[str]
) -> None:
    if progress.finished or progress.batcher_state is None:
        return
    stage = progress.plan.stages[progress.stage_index]
    if changed & set(stage.datasets):
        progress.batcher_state = None
        notes.append(f"stage '{stage.name}' starts over: its data changed")


def _check_unchanged(
    cfg: RunConfig,
    stored_runner: Any,
    data: dict[str, Any],
    allowed: set[str],
    source: Path | None,
    notes: list[str],
) -> set[str]:
    """Refuse settings and data that changed since the checkpoint; the datasets that did."""
    args = stored_runner.get("state_args") if isinstance(stored_runner, dict) else None
    args = args if isinstance(args, dict) else {}
    stored_config = args.get("config")
    changes, changed_data = check_resume(
        stored_config if isinstance(stored_config, dict) else {},
        cfg.to_dict(),
        args.get("data"),
        data,
        allowed,
        Path(source or cfg.model_path()),
    )
    notes.extend(changes)
    return changed_data


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


def _check_fits(
    cfg: RunConfig, experiment: Experiment, model_args: ModelArgs, device: torch.device
) -> None:
    """Refuse sizes whose weights, gradients and optimizer state cannot fit, before allocating."""
    shape_only = experiment.build_meta(model_args)
    _apply_freezing(shape_only, cfg.system.default_freeze)
    params = list(shape_only.parameters())
    trainable = sum(p.numel() for p in params if p.requires_grad)
    check_fits_in_memory(sum(p.numel() for p in params), trainable, cfg.optim.optimizer, device)


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
