"""What each stage of a plan trains with: its optimization, context and batch, resolved once.

A stage's curriculum keys (`lmplay.plan.stage_keys`) override what the stage before used, which
starts from the flags and the model: `lr`, `min_lr`, `lr_schedule`, `weight_decay`,
`grad_clip`, `context_len`, `batch_size` and `mini_batch_size` carry over from stage to stage.
`freeze`, `reset_optimizer`, the budgets and `decay_fraction`/`decay_tokens` belong to their
stage alone. `warmup_steps` not given is the flag's for the plan's first stage and a stage that
resets the optimizer, and 0 otherwise (warmup protects fresh moments, which carried ones are not).

Stages before the first one with a schedule key follow the run's schedule (the flags, over the
run's steps); from there on each stage runs its own over its own budget.

The checks that need the model run here, before any data is loaded.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable
from dataclasses import dataclass

from torch import nn

from lmplay.config import RunConfig
from lmplay.errors import UsageError
from lmplay.models import ModelArgs
from lmplay.plan.format import StageDef, TrainingPlan
from lmplay.plan.stage_keys import SCHEDULE_KEYS
from lmplay.train.schedule import StageSchedule

DEFAULT_DECAY_FRACTION = 0.2
CARRIED = (
    "lr",
    "min_lr",
    "lr_schedule",
    "weight_decay",
    "grad_clip",
    "context_len",
    "batch_size",
    "mini_batch_size",
)


@dataclass(frozen=True)
class StageSettings:
    lr: float
    min_lr: float
    lr_schedule: str
    weight_decay: float
    grad_clip: float
    context_len: int
    batch_size: int
    mini_batch_size: int | None  # None: the whole batch in one forward/backward
    warmup_steps: int
    warmup_start_fraction: float
    own_schedule: bool  # False: the run's schedule over its global step
    freeze: tuple[str, ...] = ()
    reset_optimizer: bool = False
    decay_fraction: float = DEFAULT_DECAY_FRACTION
    decay_tokens: int | None = None

    def mini_batch(self) -> int:
        return min(self.mini_batch_size or self.batch_size, self.batch_size)

    def schedule(self, stage: StageDef, planned_tokens: Callable[[], int]) -> StageSchedule:
        """The stage's schedule over its budget: its steps when that is all it sets, else the
        target tokens it will train (its tokens budget, or what its epochs hold)."""
        steps_only = stage.get("steps") is not None and stage.get("tokens") is None
        unit, total = ("steps", stage.get("steps")) if steps_only else ("tokens", planned_tokens())
        decay = self.decay_tokens if self.decay_tokens is not None else self.decay_fraction * total
        return StageSchedule(
            peak_lr=self.lr,
            kind=self.lr_schedule,
            total=total,
            unit=unit,
            min_lr=self.min_lr,
            warmup_steps=self.warmup_steps,
            warmup_start_fraction=self.warmup_start_fraction,
            decay=float(decay),
        )


def stage_settings(
    plan: TrainingPlan, cfg: RunConfig, model: nn.Module, model_args: ModelArgs
) -> list[StageSettings]:
    """Every stage's settings, checked against the model; refusals name plan, stage and key."""
    carried = {
        "lr": cfg.optim.lr,
        "min_lr": cfg.optim.min_lr,
        "lr_schedule": cfg.optim.lr_schedule,
        "weight_decay": cfg.optim.weight_decay_value(),
        "grad_clip": cfg.optim.grad_clip,
        "context_len": model_args.context_len,
        "batch_size": cfg.batch.batch_size,
        "mini_batch_size": cfg.batch.mini_batch_size,
    }
    names = [name for name, _ in model.named_parameters()]
    own_schedule = False
    settings = []
    for index, stage in enumerate(plan.stages):
        where = f"plan {plan.name}: stages[{index}] '{stage.name}'"
        carried.update({key: stage.get(key) for key in CARRIED if stage.get(key) is not None})
        own_schedule = own_schedule or any(stage.get(key) is not None for key in SCHEDULE_KEYS)
        reset = bool(stage.get("reset_optimizer", False))
        warmup = cfg.optim.warmup_steps() if index == 0 or reset else 0
        setting = StageSettings(
            **carried,
            warmup_steps=stage.get("warmup_steps", warmup),
            warmup_start_fraction=cfg.optim.optimizer_warmup_fraction,
            own_schedule=own_schedule,
            freeze=tuple(stage.get("freeze", ())),
            reset_optimizer=reset,
            decay_fraction=stage.get("decay_fraction", DEFAULT_DECAY_FRACTION),
            decay_tokens=stage.get("decay_tokens"),
        )
        _check(setting, stage, names, model_args, where)
        if cfg.optim.optimizer == "adamw" and setting.lr * setting.weight_decay >= 1:
            raise UsageError(
                f"{where}.weight_decay: lr {setting.lr:g} x weight_decay {setting.weight_decay:g} "
                "is at least 1: each adamw step would zero or flip every weight"
            )
        settings.append(setting)
    return settings


def _check(
    setting: StageSettings, stage: StageDef, names: list[str], args: ModelArgs, where: str
) -> None:
    if setting.context_len > args.context_len:
        raise UsageError(
            f"{where}.context_len: {setting.context_len} exceeds the model's maximum of "
            f"{args.context_len} positions (--context-len)"
        )
    if setting.own_schedule and setting.min_lr > setting.lr:
        raise UsageError(f"{where}.min_lr: {setting.min_lr} exceeds the stage's lr {setting.lr}")
    if (stage.get("decay_fraction") or stage.get("decay_tokens")) and setting.lr_schedule != "wsd":
        raise UsageError(f"{where}.lr_schedule: decay_fraction/decay_tokens need 'wsd'")
    for pattern in setting.freeze:
        if not any(fnmatch.fnmatchcase(name, pattern) for name in names):
            raise UsageError(
                f"{where}.freeze: pattern '{pattern}' matches no parameter; names look like "
                f"{', '.join(names[:3])}"
            )
    if len(frozen_names(names, setting.freeze)) == len(names):
        raise UsageError(f"{where}.freeze: the patterns freeze every parameter")


def frozen_names(names: list[str], patterns: tuple[str, ...]) -> list[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def frozen_parameters(model: nn.Module, patterns: tuple[str, ...]) -> list[nn.Parameter]:
    """The parameters a stage's `freeze` patterns name: they get no update in that stage."""
    chosen = set(frozen_names([n for n, _ in model.named_parameters()], patterns))
    return [p for n, p in model.named_parameters() if n in chosen]
