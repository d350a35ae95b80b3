"""Curriculum keys of a plan stage: mixture weights, budgets, optimization, context and batch.

    {"name": "anneal",
     "mix": {"web": 0.7, "code": 0.3},   # documents drawn in these proportions of target tokens
     "repeat": true,                     # a dataset that runs out is re-permuted and repeated
     "tokens": 2000000,                  # budgets: the stage ends at the first of epochs,
     "steps": 500,                       # tokens (trained target tokens) and steps it sets
     "lr": 3e-4, "min_lr": 0.0,          # peak and floor of the stage's own schedule
     "lr_schedule": "wsd",               # constant | linear | cosine | wsd
     "warmup_steps": 0,
     "decay_fraction": 0.2,              # wsd: decay over the last 20% of the budget ...
     "decay_tokens": 200000,             # ... or over its last 200k target tokens
     "weight_decay": 0.1, "grad_clip": 1.0,
     "freeze": ["embed.*"],              # parameter-name patterns (fnmatch) not trained here
     "reset_optimizer": false,           # fresh optimizer moments at the start of the stage
     "context_len": 256, "batch_size": 64, "mini_batch_size": 16}

Only the shape of each value is checked here; what needs the model (a `freeze` pattern that
matches no parameter, a context longer than the model's) is checked in `lmplay.train.curriculum`
before any data is loaded. `docs/plans.md` describes every key and how values carry over.
"""

from __future__ import annotations

import math
from typing import Any

from lmplay.errors import UsageError

LR_SCHEDULE_KINDS = ("constant", "linear", "cosine", "wsd")
MIX_KEYS = ("mix", "repeat")
BUDGET_KEYS = ("tokens", "steps")
OPTIM_KEYS = (
    "lr",
    "min_lr",
    "lr_schedule",
    "warmup_steps",
    "decay_fraction",
    "decay_tokens",
    "weight_decay",
    "grad_clip",
    "freeze",
    "reset_optimizer",
)
SHAPE_KEYS = ("context_len", "batch_size", "mini_batch_size")
CURRICULUM_KEYS = (*MIX_KEYS, *BUDGET_KEYS, *OPTIM_KEYS, *SHAPE_KEYS)
SCHEDULE_KEYS = ("lr", "min_lr", "lr_schedule", "warmup_steps", "decay_fraction", "decay_tokens")
"""Keys that give a stage a schedule of its own, over its own budget."""

_POSITIVE_INTEGERS = ("tokens", "steps", "decay_tokens", *SHAPE_KEYS)
_FLAGS = ("repeat", "reset_optimizer")


def parse_mix(raw: dict[str, Any], datasets: dict[str, Any], where: str) -> dict[str, float]:
    """The stage's mixture weights by dataset name, in the plan's order; {} without `mix`."""
    mix = raw.get("mix")
    if mix is None:
        return {}
    if not isinstance(mix, dict) or not mix:
        raise UsageError(
            f'{where}.mix: must be an object of dataset weights such as {{"web": 0.7}}'
        )
    for name, weight in mix.items():
        if name not in datasets:
            raise UsageError(
                f"{where}.mix: unknown dataset '{name}'; defined: {', '.join(datasets)}"
            )
        if not _is_number(weight) or not math.isfinite(weight) or weight < 0:
            raise UsageError(f"{where}.mix.{name}: must be a finite number >= 0, got {weight!r}")
    if sum(mix.values()) <= 0:
        raise UsageError(f"{where}.mix: the weights sum to 0; give some dataset a weight > 0")
    return {name: float(weight) for name, weight in mix.items()}


def parse_curriculum_keys(raw: dict[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    """The budget, optimization and shape keys a stage sets, checked, as sorted pairs."""
    found: dict[str, Any] = {}
    for key in (*BUDGET_KEYS, *OPTIM_KEYS, *SHAPE_KEYS, "repeat"):
        if key in raw:
            found[key] = _checked(key, raw[key], f"{where}.{key}")
    if "decay_fraction" in found and "decay_tokens" in found:
        raise UsageError(f"{where}.decay_tokens: give 'decay_fraction' or 'decay_tokens', not both")
    if "decay_tokens" in found and "tokens" not in found:
        raise UsageError(
            f"{where}.decay_tokens: needs a 'tokens' budget; with 'steps' or 'epochs' use "
            "'decay_fraction'"
        )
    for key in ("decay_fraction", "decay_tokens"):
        if key in found and found.get("lr_schedule", "wsd") != "wsd":
            raise UsageError(f"{where}.{key}: applies to lr_schedule 'wsd' only")
    if "min_lr" in found and "lr" in found and found["min_lr"] > found["lr"]:
        raise UsageError(f"{where}.min_lr: {found['min_lr']} exceeds the stage's lr {found['lr']}")
    if found.get("mini_batch_size", 0) > found.get("batch_size", math.inf):
        raise UsageError(f"{where}.mini_batch_size: exceeds the stage's batch_size")
    return tuple(sorted(found.items()))


def _checked(key: str, value: Any, where: str) -> Any:
    if key in _POSITIVE_INTEGERS:
        if key in ("tokens", "decay_tokens") and isinstance(value, float) and value.is_integer():
            value = int(value)  # 2e9 in JSON is a float
        if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
            raise UsageError(f"{where}: must be a positive integer, got {value!r}")
        return value
    if key in _FLAGS:
        if not isinstance(value, bool):
            raise UsageError(f"{where}: must be true or false, got {value!r}")
        return value
    if key == "lr_schedule":
        if value not in LR_SCHEDULE_KINDS:
            kinds = ", ".join(LR_SCHEDULE_KINDS)
            raise UsageError(f"{where}: unknown schedule {value!r}; use one of: {kinds}")
        return value
    if key == "freeze":
        patterns = [value] if isinstance(value, str) else value
        if (
            not isinstance(patterns, list)
            or not patterns
            or not all(isinstance(p, str) and p for p in patterns)
        ):
            example = '["embed.*"]'
            raise UsageError(
                f"{where}: must be a list of parameter-name patterns such as {example}"
            )
        return tuple(patterns)
    if key == "warmup_steps":
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise UsageError(f"{where}: must be an integer >= 0, got {value!r}")
        return value
    if not _is_number(value) or not math.isfinite(value) or value < 0:
        raise UsageError(f"{where}: must be a finite number >= 0, got {value!r}")
    if key == "lr" and not 0 < value <= 10:
        raise UsageError(f"{where}: must be a rate in (0, 10], got {value!r}")
    if key == "decay_fraction" and not 0 < value <= 1:
        raise UsageError(f"{where}: must be a fraction in (0, 1], got {value!r}")
    return float(value)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)
