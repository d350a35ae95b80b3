"""Stop-rule keys of a plan stage, and the top-level keys for eval-only sets and sample prompts.

A stage may carry its own stop rules; each key overrides the matching `lmp_trainer` flag for
that stage only (the rules themselves live in `lmplay.train.stopping`):

    {"name": "main", "datasets": ["author_a"], "epochs": 50,
     "stop_at_loss": 3.2,        # end the stage when the mean train loss of the window is <= this
     "stop_loss_window": 20,     # steps in that running mean (default 20)
     "min_epochs": 2,            # no loss or early stop before 2 epochs of this stage ...
     "min_steps": 100,           # ... nor before 100 optimizer steps of this stage
     "early_stop_set": "author_b",  # end the stage when this validation set stops improving
     "patience": 3}              # ... for this many validations in a row (default 3)

Counts are per stage: `min_steps` counts the stage's optimizer steps, `min_epochs` its passes
over its own documents. The stage's `epochs` stays its hard maximum.
"""

from __future__ import annotations

import math
from typing import Any

from lmplay.errors import UsageError

STOP_KEYS = (
    "stop_at_loss",
    "stop_loss_window",
    "min_steps",
    "min_epochs",
    "early_stop_set",
    "patience",
)
_INTEGER_KEYS = {"stop_loss_window": 1, "min_steps": 0, "patience": 1}  # key -> smallest value
_NUMBER_KEYS = ("stop_at_loss", "min_epochs")


def parse_stop_keys(raw: dict[str, Any], where: str) -> tuple[tuple[str, Any], ...]:
    """The stop keys a stage sets, checked, as sorted (key, value) pairs."""
    found: dict[str, Any] = {}
    for key in STOP_KEYS:
        if key not in raw:
            continue
        value = raw[key]
        if key in _INTEGER_KEYS:
            low = _INTEGER_KEYS[key]
            if not isinstance(value, int) or isinstance(value, bool) or value < low:
                raise UsageError(f"{where}.{key}: must be an integer >= {low}, got {value!r}")
        elif key in _NUMBER_KEYS:
            if (
                not isinstance(value, (int, float))
                or isinstance(value, bool)
                or not math.isfinite(value)
                or value < 0
            ):
                raise UsageError(f"{where}.{key}: must be a finite number >= 0, got {value!r}")
            value = float(value)
        elif not isinstance(value, str) or not value:
            raise UsageError(f"{where}.{key}: must be the name of a validation set, got {value!r}")
        found[key] = value
    return tuple(sorted(found.items()))


def parse_eval_only(value: Any, datasets: dict[str, Any], trained: set[str], where: str) -> tuple:
    """Names of datasets scored at every validation point and never trained on."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(n, str) for n in value):
        raise UsageError(f"{where}: 'eval_only' must be a list of dataset names")
    for name in value:
        if name not in datasets:
            raise UsageError(
                f"{where}: eval_only names unknown dataset '{name}'; defined: {', '.join(datasets)}"
            )
        if name in trained:
            raise UsageError(
                f"{where}: dataset '{name}' is eval_only but a stage trains on it; "
                "remove it from 'eval_only' or from the stage"
            )
        dataset = datasets[name]
        if dataset.validation_fraction <= 0 and not dataset.validation_split:
            raise UsageError(
                f"{where}: eval_only dataset '{name}' holds out no rows; give it a "
                "validation_fraction > 0 or a validation_split"
            )
    return tuple(dict.fromkeys(value))


def parse_prompts(value: Any, where: str) -> tuple[str, ...]:
    """The `generate_prompts` of a plan: non-empty strings continued at every sample point."""
    if value is None:
        return ()
    if (
        not isinstance(value, list)
        or not value
        or not all(isinstance(p, str) and p.strip() for p in value)
    ):
        raise UsageError(f"{where}: 'generate_prompts' must be a non-empty list of non-empty texts")
    return tuple(value)
