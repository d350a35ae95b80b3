"""Stop rules: when a stage ends before its data runs out.

Each stage has one `StageRule`, made of the stage's own plan keys (`lmplay.plan.stop_keys`)
over the `--stop-*` flags. The Trainer asks `StopRules` after every optimizer step and every
validation; once a rule fires, the stage ends as if its data had run out (a last validation,
the stage checkpoint, then the next stage). Everything is per stage:

- loss target: the mean of the stage's last `stop_loss_window` train losses (a full window, so
  at least that many steps of the stage) is <= `stop_at_loss`;
- early stop: `early_stop_set` has not improved on its best loss of the stage (strictly lower)
  for `patience` validations in a row;
- both wait until the stage has run `min_steps` optimizer steps and `min_epochs` epochs (passes
  over its documents, counted in whole documents taken);
- `--max-epochs` ends a stage after that many epochs whatever the loss.

The state (the window's losses as Python floats, the stage's step count, the best validation
loss and the validations since it, a fired stop) is saved in the checkpoint, so a resumed run
makes the same decisions at the same steps as an uninterrupted one.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import asdict, dataclass
from typing import Any

from lmplay.config import StopConfig
from lmplay.errors import UsageError
from lmplay.plan.format import StageDef, TrainingPlan

STATE_VERSION = 1
DEFAULT_PATIENCE = 3


@dataclass(frozen=True)
class StageRule:
    stop_at_loss: float | None = None
    stop_loss_window: int = 20
    min_steps: int = 0
    min_epochs: float = 0.0
    max_epochs: float | None = None
    early_stop_set: str | None = None
    patience: int = DEFAULT_PATIENCE

    @property
    def waits_for_minimum(self) -> bool:
        return self.stop_at_loss is not None or self.early_stop_set is not None


@dataclass(frozen=True)
class Stop:
    """Why a stage ended early: `reason` is a keyword for tables, `message` a sentence."""

    reason: str  # loss_target, early_stop or max_epochs
    message: str


def stage_rule(stage: StageDef, flags: StopConfig) -> StageRule:
    """The stage's own stop keys over the flags."""
    own = dict(stage.stop)

    def pick(key: str, default: Any) -> Any:
        if key in own:
            return own[key]
        value = getattr(flags, key)
        return default if value is None else value

    return StageRule(
        stop_at_loss=pick("stop_at_loss", None),
        stop_loss_window=pick("stop_loss_window", 20),
        min_steps=pick("min_steps", 0),
        min_epochs=float(pick("min_epochs", 0.0)),
        max_epochs=flags.max_epochs,
        early_stop_set=pick("early_stop_set", None),
        patience=pick("patience", DEFAULT_PATIENCE),
    )


class StopRules:
    """Stateful: the rules of every stage and where the current stage stands against its rule."""

    def __init__(self, plan: TrainingPlan, flags: StopConfig) -> None:
        self.rules = [stage_rule(stage, flags) for stage in plan.stages]
        _check_flags(plan, flags, self.rules)
        self.stage_index = 0
        self._reset()

    def _reset(self) -> None:
        self.losses: deque[float] = deque(maxlen=self.rule.stop_loss_window if self.rule else 1)
        self.stage_steps = 0
        self.best: float | None = None
        self.since_best = 0
        self.stop: Stop | None = None

    @property
    def rule(self) -> StageRule | None:
        return self.rules[self.stage_index] if self.stage_index < len(self.rules) else None

    def begin_stage(self, index: int) -> None:
        """The run is in stage `index`; a new stage starts with an empty window and no best."""
        if index != self.stage_index:
            self.stage_index = index
            self._reset()

    def after_step(self, loss: float, epochs_done: float) -> Stop | None:
        """Count one optimizer step of the stage with its train loss; the stop, if any."""
        rule = self.rule
        if rule is None or self.stop is not None:
            return self.stop
        self.stage_steps += 1
        self.losses.append(float(loss))
        if rule.stop_at_loss is not None and len(self.losses) == rule.stop_loss_window:
            mean = self.mean_loss()
            if mean <= rule.stop_at_loss and self._minimum_done(rule, epochs_done):
                self.stop = Stop(
                    "loss_target",
                    f"mean train loss of the last {rule.stop_loss_window} steps {mean:.4f} <= "
                    f"{rule.stop_at_loss:g}",
                )
        if self.stop is None and rule.max_epochs is not None and epochs_done >= rule.max_epochs:
            self.stop = Stop("max_epochs", f"ran {epochs_done:.3g} epochs (--max-epochs)")
        return self.stop

    def after_validation(self, losses: dict[str, float], epochs_done: float) -> Stop | None:
        """Score a validation point against the early-stop set; the stop, if any."""
        rule = self.rule
        if rule is None or self.stop is not None or rule.early_stop_set is None:
            return self.stop
        loss = losses.get(rule.early_stop_set)
        if loss is None:
            return None  # the set holds no rows at these sizes: nothing to compare
        if math.isfinite(loss) and (self.best is None or loss < self.best):
            self.best, self.since_best = loss, 0
        else:
            self.since_best += 1
        if self.since_best >= rule.patience and self._minimum_done(rule, epochs_done):
            best = "nothing finite" if self.best is None else f"{self.best:.4f}"
            self.stop = Stop(
                "early_stop",
                f"validation '{rule.early_stop_set}' has not improved on {best} for "
                f"{self.since_best} validations (patience {rule.patience})",
            )
        return self.stop

    def mean_loss(self) -> float:
        return math.fsum(self.losses) / len(self.losses)

    def _minimum_done(self, rule: StageRule, epochs_done: float) -> bool:
        return self.stage_steps >= rule.min_steps and epochs_done >= rule.min_epochs

    def describe(self, stage_names: list[str]) -> list[str]:
        """One line per stage with a rule, for the start-of-run summary."""
        lines = []
        for name, rule in zip(stage_names, self.rules, strict=True):
            parts = []
            if rule.stop_at_loss is not None:
                parts.append(
                    f"loss <= {rule.stop_at_loss:g} (mean of {rule.stop_loss_window} steps)"
                )
            if rule.early_stop_set is not None:
                parts.append(f"early stop on '{rule.early_stop_set}' (patience {rule.patience})")
            if parts and (rule.min_steps or rule.min_epochs):
                parts.append(f"after {rule.min_steps} steps and {rule.min_epochs:g} epochs")
            if rule.max_epochs is not None:
                parts.append(f"at most {rule.max_epochs:g} epochs")
            if parts:
                lines.append(f"stop stage '{name}' at: " + ", ".join(parts))
        return lines

    def state_args(self) -> dict[str, Any]:
        return {"rules": [asdict(rule) for rule in self.rules]}

    def state_dict(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "stage_index": self.stage_index,
            "losses": list(self.losses),
            "stage_steps": self.stage_steps,
            "best": self.best,
            "since_best": self.since_best,
            "stop": None if self.stop is None else asdict(self.stop),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION:
            raise ValueError(f"stop rules state version {state.get('version')} is not supported")
        self.stage_index = int(state["stage_index"])
        self._reset()
        self.losses.extend(float(loss) for loss in state["losses"])
        self.stage_steps = int(state["stage_steps"])
        self.best = None if state["best"] is None else float(state["best"])
        self.since_best = int(state["since_best"])
        self.stop = None if state["stop"] is None else Stop(**state["stop"])


def _check_flags(plan: TrainingPlan, flags: StopConfig, rules: list[StageRule]) -> None:
    """Refuse a set name the plan does not validate, and flags that no rule would use."""
    names = plan.validation_set_names()
    if flags.early_stop_set is not None and flags.early_stop_set not in names:
        raise UsageError(
            f"--early-stop-set {flags.early_stop_set}: not a validation set of plan "
            f"'{plan.name}'; its validation sets: {', '.join(names) or 'none'}"
        )
    waiting = any(rule.waits_for_minimum for rule in rules)
    for flag, value in (("--min-steps", flags.min_steps), ("--min-epochs", flags.min_epochs)):
        if value is not None and not waiting:
            raise UsageError(
                f"{flag} {value} has no effect without --stop-at-loss or --early-stop-set "
                "(or the stage keys stop_at_loss / early_stop_set)"
            )
    if flags.patience is not None and not any(rule.early_stop_set for rule in rules):
        raise UsageError(
            f"--patience {flags.patience} has no effect without --early-stop-set (or a stage's "
            "early_stop_set)"
        )
