"""Learning rate as a pure function of the optimizer step: warmup, then constant or decay.

A stage with a schedule of its own (`StageSchedule`) is a pure function of the stage's step,
its progress through its budget and that budget.

Nothing but the step count (and the step a fresh optimizer began at) needs restoring on resume.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Schedule:
    peak_lr: float
    warmup_steps: int = 0
    warmup_start_fraction: float = 0.1
    kind: str = "constant"  # constant | cosine | linear
    min_lr: float = 0.0
    decay_steps: int | None = None  # steps after warmup over which to decay to min_lr
    # `--ignore-optimizer` starts fresh moments on trained weights at this step: the warmup runs
    # again from here, scaling the decayed LR, so the new optimizer is not hit at full LR.
    warmup_from: int = 0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, schedule: Schedule) -> float:
    """LR for optimizer step `step` (0-based: the first update uses lr_at(0))."""
    since = step - schedule.warmup_from
    if 0 <= since < schedule.warmup_steps:
        target = _after_warmup(step, schedule)
        start = target * schedule.warmup_start_fraction
        return start + (target - start) * since / schedule.warmup_steps
    return _after_warmup(step, schedule)


def _after_warmup(step: int, schedule: Schedule) -> float:
    """The LR the schedule holds at `step` once warmed up: the peak, or its decay."""
    if step < schedule.warmup_steps or schedule.kind == "constant" or not schedule.decay_steps:
        return schedule.peak_lr
    progress = min(1.0, (step - schedule.warmup_steps) / schedule.decay_steps)
    if schedule.kind == "cosine":
        weight = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        weight = 1.0 - progress
    return schedule.min_lr + (schedule.peak_lr - schedule.min_lr) * weight


@dataclass(frozen=True)
class StageSchedule:
    """A stage's own schedule over its own budget, in `unit`s: steps, or target tokens.

    `wsd` holds the peak after the warmup and decays linearly to `min_lr` over the budget's
    last `decay` units; `linear` and `cosine` decay over the whole budget.
    """

    peak_lr: float
    kind: str
    total: int  # the stage's budget in `unit`s
    unit: str = "tokens"  # tokens | steps
    min_lr: float = 0.0
    warmup_steps: int = 0
    warmup_start_fraction: float = 0.1
    decay: float = 0.0  # wsd: units at the end of the budget over which the LR decays


def stage_lr_at(schedule: StageSchedule, step: int, done: int) -> float:
    """LR for the stage's optimizer step `step` (0-based), `done` units into its budget."""
    target = _stage_target(schedule, done)
    if step < schedule.warmup_steps:
        start = target * schedule.warmup_start_fraction
        return start + (target - start) * step / schedule.warmup_steps
    return target


def _stage_target(schedule: StageSchedule, done: int) -> float:
    peak, low, total = schedule.peak_lr, schedule.min_lr, max(1, schedule.total)
    if schedule.kind == "constant":
        return peak
    if schedule.kind == "wsd":
        decay_from = total - schedule.decay
        if done < decay_from or schedule.decay <= 0:
            return peak
        return peak - (peak - low) * min(1.0, (done - decay_from) / schedule.decay)
    progress = min(1.0, done / total)
    if schedule.kind == "cosine":
        return low + (peak - low) * 0.5 * (1.0 + math.cos(math.pi * progress))
    return peak - (peak - low) * progress
