"""The best checkpoint: `<model>.best.lmp` holds the run at its lowest loss on one validation set.

`--keep-best` (or `--best-set NAME`) turns it on; the set defaults to the plan's first
validation set. The best loss and its step travel in the checkpoint, so a resumed run only
replaces the file with a strictly better validation point. A different `--best-set` on a resumed
run starts ranking afresh, since losses of two sets do not compare.
"""

from __future__ import annotations

import math
from typing import Any

from lmplay.config import StopConfig
from lmplay.errors import UsageError
from lmplay.plan.format import TrainingPlan

STATE_VERSION = 1


def best_set_name(plan: TrainingPlan, flags: StopConfig) -> str | None:
    """The set `--keep-best` ranks by, or None when no best checkpoint is kept."""
    if flags.best_set is None and not flags.keep_best:
        return None
    names = plan.validation_set_names()
    if flags.best_set is None:
        if not names:
            raise UsageError(f"--keep-best: plan '{plan.name}' has no validation set to rank by")
        return names[0]
    if flags.best_set not in names:
        raise UsageError(
            f"--best-set {flags.best_set}: not a validation set of plan '{plan.name}'; its "
            f"validation sets: {', '.join(names) or 'none'}"
        )
    return flags.best_set


class BestCheckpoint:
    """Stateful: the lowest validation loss seen on `set_name` (None: not kept) and its step."""

    def __init__(self, set_name: str | None) -> None:
        self.set_name = set_name
        self.loss: float | None = None
        self.step: int | None = None

    def improved(self, losses: dict[str, float], step: int) -> bool:
        """Take a validation point; True when it beats the best (write the best checkpoint)."""
        if self.set_name is None:
            return False
        loss = losses.get(self.set_name)
        if loss is None or not math.isfinite(loss):
            return False
        if self.loss is not None and loss >= self.loss:
            return False
        self.loss, self.step = loss, step
        return True

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "set": self.set_name,
            "loss": self.loss,
            "step": self.step,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"best checkpoint state version {state.get('version')} is unknown")
        if state["set"] == self.set_name:
            self.loss = None if state["loss"] is None else float(state["loss"])
            self.step = None if state["step"] is None else int(state["step"])
