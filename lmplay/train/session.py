"""Build everything a run needs from a RunConfig, resuming from a checkpoint when one exists.

Resume order: `--model` if the file exists, else `--initial-model` (read, never written), else a
fresh start. The checkpoint's model architecture and sizes win over flags; a flag that
contradicts them is an error rather than a silently ignored value.
"""

from __future__ import annotations

import dataclasses
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
from lmplay.state import restore_rng_state, seed_everything
from lmplay.stats.recorder import StatsRecorder
from lmplay.train.checkpoint import load_checkpoint
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
    train_model: nn.Module  # the compiled wrapper when --compile-model, else `model`
    optimizer: torch.optim.Optimizer
    groups: DecayGroups
    schedule: Schedule
    plan: TrainingPlan
    progress: PlanProgress
    runner: RunnerState
    stats: StatsRecorder
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
        if device.type != "cuda":
            raise UsageError(f"--amp-dtype fp16 needs a CUDA device, not {device.type}")
        return Precision(device.type, torch.float16, torch.amp.GradScaler("cuda"))
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
    checkpoint = load_checkpoint(source) if source else None
    components = checkpoint["components"] if checkpoint else {}
    notes: list[str] = []
    seed_everything(cfg.data.seed)

    exp, model_args = _model_identity(cfg, components.get("model"), source)
    model = get_experiment(exp).build(model_args)
    if "model" in components:
        _load_weights(model, components["model"]["state"], source)
    _apply_freezing(model, cfg.system.default_freeze)
    model.to(device)

    from_initial = source is not None and source != cfg.model_path()
    plan, progress, carried = _plan_and_progress(
        cfg, components.get("curriculum"), notes, from_initial
    )
    optimizer, groups = build_optimizer(
        cfg.optim.optimizer,
        model,
        lr=cfg.optim.lr,
        weight_decay=cfg.optim.weight_decay_value(),
        device=device,
    )
    keep_history = carried and not cfg.io.reset_history
    if "optimizers" in components and not cfg.optim.ignore_optimizer:
        _load_optimizer(optimizer, components["optimizers"], cfg, source)
    elif checkpoint is not None:
        notes.append("fresh optimizer state (weights loaded); LR warmup recommended")

    runner = RunnerState()
    stats = StatsRecorder(
        cfg.stats_path(),
        run=cfg.run_name(),
        exp=exp,
        model=cfg.model_path().name,
        meta=_stats_meta(cfg, plan, model_args),
    )
    if keep_history:
        runner.load_state_dict(components["runner"]["state"])
        if "stats" in components:
            stats.load_state_dict(components["stats"]["state"])
        if "rng" in components:
            restore_rng_state(components["rng"]["state"])
    else:
        stats.reset()
    if cfg.io.reset_history and checkpoint is not None:
        notes.append("history reset: plan progress, counters and stats start over")

    train_model = model
    if cfg.system.compile_model:
        train_model = torch.compile(model, mode=cfg.system.compile_mode)
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
        schedule=_schedule(cfg),
        plan=plan,
        progress=progress,
        runner=runner,
        stats=stats,
        resumed_from=source,
        notes=notes,
        pack_len=_pack_len(cfg, exp, model_args, notes),
    )


def _model_identity(
    cfg: RunConfig, stored: dict[str, Any] | None, source: Path | None
) -> tuple[str, ModelArgs]:
    if stored is None:
        experiment = get_experiment(cfg.model.exp)
        args = experiment.args(**cfg.model.size_overrides())
        return cfg.model.exp, dataclasses.replace(args, dropout=cfg.model.dropout)
    exp = stored["state_args"]["exp"]
    args = ModelArgs.from_dict(stored["state_args"]["model_args"])
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


def _load_weights(model: nn.Module, state: dict[str, torch.Tensor], source: Path | None) -> None:
    result = model.load_state_dict(state, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise CheckpointError(
            f"checkpoint {source} does not fit this architecture: "
            f"missing keys {result.missing_keys[:8]}, unexpected keys {result.unexpected_keys[:8]}"
        )


def _load_optimizer(
    optimizer: torch.optim.Optimizer,
    stored: dict[str, Any],
    cfg: RunConfig,
    source: Path | None,
) -> None:
    stored_name = stored["state_args"]["name"]
    if stored_name != cfg.optim.optimizer:
        raise UsageError(
            f"checkpoint {source} was trained with --optimizer {stored_name}, not "
            f"{cfg.optim.optimizer}; pass --optimizer {stored_name} or --ignore-optimizer"
        )
    try:
        optimizer.load_state_dict(stored["state"])
    except (ValueError, KeyError) as error:
        raise CheckpointError(
            f"checkpoint {source}: optimizer state does not fit ({error}); "
            "--ignore-optimizer starts a fresh optimizer"
        ) from error


def _plan_and_progress(
    cfg: RunConfig, stored: dict[str, Any] | None, notes: list[str], from_initial: bool
) -> tuple[TrainingPlan, PlanProgress, bool]:
    """The plan, its progress, and whether the checkpoint's progress was carried over."""
    plan = load_plan(cfg.data.training_plan)
    if stored is None or cfg.io.reset_history:
        return plan, PlanProgress(plan), False
    stored_plan = plan_from_checkpoint(stored["state_args"], origin="stored in the checkpoint")
    old, new = stored_plan.stage_fingerprints(), plan.stage_fingerprints()
    if old == new:
        progress = PlanProgress(plan)
        progress.load_state_dict(stored["state"])
        return plan, progress, True
    if from_initial:
        notes.append(f"plan '{plan.name}' starts from the weights of --initial-model")
        return plan, PlanProgress(plan), False
    if not cfg.data.override_plan:
        first = next((i for i, (a, b) in enumerate(zip(old, new)) if a != b), len(old))
        change = f"from stage {first + 1} on" if first < len(new) else "stages removed"
        raise UsageError(
            f"--training-plan {cfg.data.training_plan} differs ({change}) from the plan "
            f"'{stored_plan.name}' this run was trained with; pass --override-plan to switch "
            "plans (completed unchanged stages stay done) or a different --model"
        )
    progress = PlanProgress(plan)
    notes.append("plan changed (--override-plan): " + progress.adopt(stored["state"]))
    return plan, progress, True


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
