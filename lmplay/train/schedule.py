"""Learning rate as a pure function of the optimizer step: warmup, then constant or decay.

Nothing but the step count needs restoring on resume.
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

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def lr_at(step: int, schedule: Schedule) -> float:
    """LR for optimizer step `step` (0-based: the first update uses lr_at(0))."""
    if step < schedule.warmup_steps:
        start = schedule.peak_lr * schedule.warmup_start_fraction
        return start + (schedule.peak_lr - start) * step / schedule.warmup_steps
    if schedule.kind == "constant" or not schedule.decay_steps:
        return schedule.peak_lr
    progress = min(1.0, (step - schedule.warmup_steps) / schedule.decay_steps)
    if schedule.kind == "cosine":
        weight = 0.5 * (1.0 + math.cos(math.pi * progress))
    else:
        weight = 1.0 - progress
    return schedule.min_lr + (schedule.peak_lr - schedule.min_lr) * weight
