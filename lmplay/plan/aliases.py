"""Other spellings of a plan that lmplay reads, rewritten into the one form `parse_plan` checks.

- `"steps"`: the first name of `"stages"` (a step is an optimizer update everywhere else in
  lmplay); still read, with a one-line warning.
- `"stage": {...}`: a plan of one stage, as the original lmplay documentation writes it.
- `"dataset"` in a stage: the singular of `"datasets"`, a name or a list of names.
- `{"NAME": {"dataset": ..., "epochs": ...}}` as an element of `"stages"`: a stage named NAME.

The rewritten plan is what a checkpoint stores, so a resumed run sees only the canonical form.
"""

from __future__ import annotations

import sys
from typing import Any

from lmplay.errors import UsageError

STAGE_LIST_KEYS = ("stages", "steps", "stage")


def canonical_plan(obj: dict[str, Any], where: str) -> dict[str, Any]:
    """`obj` with its stages under `"stages"`, each stage a `{"name"?, "datasets", "epochs"}`."""
    given = [key for key in STAGE_LIST_KEYS if key in obj]
    if len(given) > 1:
        raise UsageError(f"{where}: give one of {', '.join(repr(k) for k in given)}, not several")
    if not given:
        return obj
    key = given[0]
    stages = obj[key]
    if key == "steps":
        print(f"warning: {where}: 'steps' is the old name of 'stages'; rename it", file=sys.stderr)
    elif key == "stage":
        stages = [stages]
    return _with_stages({k: v for k, v in obj.items() if k != key}, stages)


def _with_stages(obj: dict[str, Any], stages: Any) -> dict[str, Any]:
    if isinstance(stages, list):
        stages = [_canonical_stage(stage) for stage in stages]
    return {**obj, "stages": stages}


def _canonical_stage(stage: Any) -> Any:
    if not isinstance(stage, dict):
        return stage
    if len(stage) == 1:
        ((name, body),) = stage.items()
        if isinstance(body, dict) and name not in ("name", "datasets", "dataset", "epochs", "mix"):
            stage = {"name": name, **body}  # {"NAME": {...}}: a stage named by its key
    if "dataset" in stage and "datasets" not in stage:
        names = stage["dataset"]
        stage = {k: v for k, v in stage.items() if k != "dataset"}
        stage["datasets"] = [names] if isinstance(names, str) else names
    return stage
