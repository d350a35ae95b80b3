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
from lmplay.models.lora import LoraSpec, lora_targets_layer
from lmplay.plan.format import TrainingPlan
from lmplay.plan.progress import PlanProgress
from lmplay.plan.registry import load_plan, plan_from_checkpoint
from lmplay.run_files import RunFiles
from lmplay.state import seed_everything
from lmplay.stats.recorder import StatsRecorder
from lmplay.stats.trackers import Trackers
from lmplay.train.adapters import adapters_for, attach_adapters
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
    best: BestCheckpoint  # the best validation loss so far, for the best checkpoint
    files: RunFiles  # every path the run writes
    pack_len: int | None = None  # row length when short samples share rows; None: one per row
    experiment: Experiment | None = None  # what built `model` (an hf: one without its folder)
    world: World = SINGLE  # this process's rank among the torchrun ranks
    started_from: Path | None = None  # --initial-model: a new run from these weights
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
    path = cfg.run_files().checkpoint
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
    old = Path(DEFAULT_OUT_DIR) / cfg.run_files().checkpoint.name
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
    files = cfg.run_files()
    allowed = allowed_changes(cfg.data.allow_changed)
    device = local_device(resolve_device(cfg.system.device), world)
    precision = resolve_precision(cfg, device)
    source = find_checkpoint(cfg)
    stored = _read_source(source)
    notes: list[str] = []
    seed_everything(cfg.data.seed)

    from_initial = source is not None and source != files.checkpoint
    exp, model_args = _model_identity(cfg, stored.get("model"), source)
    experiment = get_experiment(exp, (stored.get("model") or {}).get("state_args"))
    _check_fits(cfg, experiment, model_args, device, adapters_for(cfg, stored.get("model")))
    model = experiment.build(model_args)
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
        changed_data = _check_unchanged(
            cfg, model_args, stored.get("runner"), data, allowed, source, notes
        )
    optimizer, groups = build_optimizer(
        cfg.optim.optimizer,
        model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay_value(),
        device=device,
    )
    runner = RunnerState()
    stats = StatsRecorder(
        files.stats,
        run=cfg.run_name(),
        exp=exp,
        model=files.checkpoint.name,
        meta=_stats_meta(cfg, plan, model_args, _provenance(stored, source, from_initial)),
        write=world.is_main,
        trackers=Trackers.from_names(cfg.io.trackers(), files),
    )
    schedule = _schedule(cfg)
    checkpoint_map = _checkpoint_map(
        cfg, exp, model_args, model, optimizer, groups, schedule, plan, progress, runner, stats
    )
    checkpoint_map.entries["runner"].state_args["data"] = data
    checkpoint_map.entries["runner"].state_args["config"] = _effective_config(cfg, model_args)
    if "initial_model" in stats.meta:  # kept by every later save, so a resume keeps saying it
        checkpoint_map.entries["runner"].state_args["initial_model"] = stats.meta["initial_model"]
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
        fresh = _fresh_optimizer_reason(cfg, stored, model, groups) if from_initial else None
        if fresh is not None:
            notes.append(f"fresh optimizer: {fresh} ({source})")
        skip = _components_to_skip(cfg, stored, source, keep_history, notes, fresh is not None)
        checkpoint_map.entries["plan"].load = load_progress
        notes.extend(checkpoint_map.load(stored, source, skip))
        _restart_stage_on_changed_data(progress, changed_data, notes)
    if not keep_history:
        stats.reset()
    schedule = _restarted_warmup(
        schedule, checkpoint_map, runner, None if from_initial else source, stored, cfg, notes
    )
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
        files=files,
        world=world,
        started_from=source if from_initial else None,
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
            "stats": Entry(stats, {"path": str(stats.path), "run": cfg.run_name()}),
            "rng": Entry(RngState(), {}),
        }
    )


def _components_to_skip(
    cfg: RunConfig,
    stored: dict[str, Any],
    source: Path,
    keep_history: bool,
    notes: list[str],
    fresh_optimizer: bool = False,
) -> set[str]:
    """What this run does not take from the checkpoint: a fresh optimizer, or fresh history."""
    skip: set[str] = set()
    if fresh_optimizer or cfg.optim.ignore_optimizer or "optimizer" not in stored:
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


def _fresh_optimizer_reason(
    cfg: RunConfig, stored: dict[str, Any], model: nn.Module, groups: DecayGroups
) -> str | None:
    """Why a run from --initial-model starts a fresh optimizer; None: it takes the stored one.

    Moments belong to parameters by position, so they are taken only when asked for and when
    every parameter, its shape, and the decay groups are exactly this run's.
    """
    if "optimizer" not in stored:
        return "--initial-model holds no optimizer state"
    if not cfg.optim.initial_model_optimizer:
        return (
            "the optimizer state of --initial-model is dropped (--initial-model-optimizer "
            "keeps it when the parameters match)"
        )
    state = (stored.get("model") or {}).get("state")
    shapes = {k: tuple(v.shape) for k, v in state.items()} if isinstance(state, dict) else {}
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    stored_args = stored["optimizer"].get("state_args") or {}
    if shapes != ours or stored_args.get("groups") != groups.table():
        return (
            "--initial-model-optimizer: the parameters of --initial-model differ from this "
            "run's (adapters, frozen or resized layers), its optimizer state is dropped"
        )
    if stored_args.get("name") != cfg.optim.optimizer:
        return (
            f"--initial-model-optimizer: --initial-model was trained with "
            f"{stored_args.get('name')}, not {cfg.optim.optimizer}; its state is dropped"
        )
    return None


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
        return cfg.model.exp, _with_dropout(args, cfg.model.dropout)
    exp = _stored_arg(stored, "exp", "model", source)
    raw_args = _stored_arg(stored, "model_args", "model", source)
    if not isinstance(raw_args, dict):
        raise CheckpointError(f"checkpoint {source}: component 'model' has malformed model_args")
    # Without --dropout the model keeps its own (a checkpoint's, or a transformers folder's);
    # the resume check refuses a changed --dropout unless --allow-changed dropout accepts it.
    args = _with_dropout(ModelArgs.from_dict(raw_args), cfg.model.dropout)
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


def _with_dropout(args: ModelArgs, dropout: float | None) -> ModelArgs:
    return args if dropout is None else dataclasses.replace(args, dropout=dropout)


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
    model_args: ModelArgs,
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
        _effective_config(cfg, model_args),
        args.get("data"),
        data,
        allowed,
        Path(source or cfg.run_files().checkpoint),
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
    if stored is None or cfg.io.reset_history or from_initial:
        return plan, progress, None  # a run from --initial-model is a new run
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
    cfg: RunConfig,
    experiment: Experiment,
    model_args: ModelArgs,
    device: torch.device,
    lora: LoraSpec | None,
) -> None:
    """Refuse sizes whose weights, gradients and optimizer state cannot fit, before allocating."""
    total, trainable = parameter_counts(experiment, model_args, cfg.system.default_freeze, lora)
    check_fits_in_memory(total, trainable, cfg.optim.optimizer, device)


def parameter_counts(
    experiment: Experiment, args: ModelArgs, default_freeze: bool, lora: LoraSpec | None
) -> tuple[int, int]:
    """(all, trainable) parameters, LoRA adapters included, in well under a second at any size.

    Counted on storage-free builds one and two blocks deep and extrapolated to the model's
    depth (counts grow by the same amount per block), since even a storage-free build of a
    very deep model takes minutes.
    """
    depths = [args.num_blocks] if args.num_blocks <= 2 else [1, 2]
    counts = []
    for blocks in depths:
        shallow = experiment.build_meta_depth(args, blocks)
        _apply_freezing(shallow, default_freeze)
        counts.append(_counts_with_adapters(shallow, lora))
    if len(counts) == 1:
        return counts[0]
    (total_1, trainable_1), (total_2, trainable_2) = counts
    more = args.num_blocks - 1
    return total_1 + (total_2 - total_1) * more, trainable_1 + (trainable_2 - trainable_1) * more


def _counts_with_adapters(model: nn.Module, lora: LoraSpec | None) -> tuple[int, int]:
    params = list(model.parameters())
    total = sum(p.numel() for p in params)
    if lora is None:
        return total, sum(p.numel() for p in params if p.requires_grad)
    adapters = sum(  # A (rank x in) and B (out x rank) per adapted Linear; the base is frozen
        lora.rank * (module.in_features + module.out_features)
        for name, module in model.named_modules()
        if isinstance(module, nn.Linear)
        and module is not model.lm_head
        and any(lora_targets_layer(name, target) for target in lora.targets)
    )
    return total + adapters, adapters


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


def _stats_meta(
    cfg: RunConfig, plan: TrainingPlan, args: ModelArgs, initial: dict[str, Any] | None = None
) -> dict[str, Any]:
    """The run's description in its stats header; `initial`: the --initial-model it came from."""
    meta = {
        "plan": plan.name,
        "model_args": args.to_dict(),
        "batch_size": cfg.batch.batch_size,
        "mini_batch_size": cfg.batch.mini_batch(),
        "optimizer": cfg.optim.optimizer,
        "lr": cfg.optim.lr,
        "seed": cfg.data.seed,
    }
    if initial is not None:
        meta["initial_model"] = initial
    return meta


def _provenance(
    stored: dict[str, Any], source: Path | None, from_initial: bool
) -> dict[str, Any] | None:
    """{"path", "step"} of the --initial-model a run started from: read from the source at the
    start (its step; None for a transformers folder), from the run's checkpoint on a resume."""
    runner = stored.get("runner")
    if not from_initial:
        args = runner.get("state_args") if isinstance(runner, dict) else None
        found = args.get("initial_model") if isinstance(args, dict) else None
        return found if isinstance(found, dict) else None
    state = runner.get("state") if isinstance(runner, dict) else None
    step = state.get("step") if isinstance(state, dict) else None
    return {"path": str(source), "step": step}


def _effective_config(cfg: RunConfig, args: ModelArgs) -> dict[str, Any]:
    """The flags as this run applies them: --dropout resolved to the model's dropout."""
    config = cfg.to_dict()
    config["model"]["dropout"] = args.dropout
    return config
