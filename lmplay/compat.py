"""Readers of what earlier lmplay wrote or accepted, each turned into today's form here.

Each section says what it reads, since when that is old, and when the reader may go. lmplay has
made no release since 0.1.0, so "may go" names the condition, not a version: every reader below
serves files or habits from before 2026-12, and removing one turns its input into an error.

- Plan spellings (`canonical_plan`): `"steps"`, `"stage"`, `"dataset"`, stages named by a key.
- Checkpoint format 1 (`checkpoint_v1_components`): the component names before format 2.
- Stats format 1 (`read_stats_v1`): `NAME.stats.json`, a whole run as one JSON document.
- Experiment aliases (`EXPERIMENT_ALIASES`, `canonical_name`): `--exp` names before a rename.
- The old default output folder (`old_default_checkpoint`): `out_gpt/EXP.lmp` for every plan.

Nothing here imports torch or another lmplay layer: plan, stats and model code all read
through this module, and the plan and stats code runs without torch.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import orjson

from lmplay.errors import UsageError

# --- Plan spellings ---------------------------------------------------------------------------
#
# Other spellings of a plan that lmplay reads, rewritten into the one form `parse_plan` checks.
#
# - `"steps"`: the first name of `"stages"` (a step is an optimizer update everywhere else in
#   lmplay); still read, with a one-line warning. Old since 2026-12-01; may go once plans have
#   had a release to follow the warning's rename.
# - `"stage": {...}`: a plan of one stage, as the original lmplay documentation writes it.
# - `"dataset"` in a stage: the singular of `"datasets"`, a name or a list of names.
# - `{"NAME": {"dataset": ..., "epochs": ...}}` as an element of `"stages"`: a stage named NAME.
#   These three are the original lmplay's documented spellings, read so that its plan files run
#   unchanged; they go only when lmplay stops promising that (they do not warn).
#
# The rewritten plan is what a checkpoint stores, so a resumed run sees only the canonical form.

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


# --- Checkpoint format 1 ----------------------------------------------------------------------

# Format 1 named single components in the plural and the plan after one use of plans.
CHECKPOINT_V1_RENAMES = {
    "optimizers": "optimizer",
    "lr_schedulers": "lr_schedule",
    "curriculum": "plan",
}


def checkpoint_v1_components(components: dict[str, Any]) -> dict[str, Any]:
    """A format-1 checkpoint's components under their format-2 names.

    Old since 2026-11-23 (format 2: one component table walked by save and load, singular
    names). A run resumed from a format-1 file saves format 2, so this may go once no checkpoint
    from before then needs resuming; `load_checkpoint` must then refuse format 1 by its version.
    """
    return {CHECKPOINT_V1_RENAMES.get(name, name): value for name, value in components.items()}


# --- Stats format 1 ---------------------------------------------------------------------------


def read_stats_v1(path: Path, raw: bytes) -> Any:
    """The decoded document of a format-1 stats file, `raw` being its bytes.

    Format 1 is the whole run as one JSON document `{..header.., "train": [records],
    "validation": {set: [records]}}` in `NAME.stats.json`, rewritten whole at every flush. Old
    since 2026-12-01 (format 2: `NAME.stats.jsonl`, a header line and one line per record,
    appended). `lmplay.stats.runs.load_stats` checks the header and records as format 2's; a
    resumed run moves a format-1 history into the new file (`StatsRecorder`, whose state
    version 1 is that of format-1 runs) and renames the old one `NAME.stats.json.v1`. May go
    once no run from before then is resumed or plotted.
    """
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as e:
        raise UsageError(f"{path}: not valid JSON (truncated or corrupted?): {e}") from e


# --- Experiment aliases -----------------------------------------------------------------------

# Old `--exp` name -> the registered name it now goes by. Old since 2026-12-01, when the presets
# got names that say their size; each still works and warns once per process, `--exp list`
# lists them, and a checkpoint saved under one resumes under the new name. They may go once
# users have had a release that warns.
EXPERIMENT_ALIASES = {
    # The first names of the two GPT-2 presets said "medium" and "large" for GPT-2 small and
    # medium.
    "gpt2ish_med": "gpt2ish_124m",
    "gpt2ish_large": "gpt2ish_355m",
    "modern_med": "modern_162m",  # its first name did not say its size
}
_WARNED: set[str] = set()


def canonical_name(name: str) -> str:
    """The registered name `name` stands for (itself unless it is an old alias, which warns)."""
    new = EXPERIMENT_ALIASES.get(name)
    if new is None:
        return name
    if name not in _WARNED:
        _WARNED.add(name)
        print(f"warning: --exp {name} is the old name of {new}; use --exp {new}", file=sys.stderr)
    return new


# --- The old default output folder ------------------------------------------------------------


def old_default_checkpoint(default_out_dir: str | Path, checkpoint_name: str) -> Path:
    """Where lmplay saved a run's checkpoint `checkpoint_name` given neither --out-dir nor
    --model: `default_out_dir` itself, shared by every plan (`out_gpt/EXP.lmp`).

    Old since 2026-12-01 (runs are kept per plan, `out_gpt/PLAN/EXP.lmp`). The trainer refuses
    to start afresh beside a checkpoint of the same plan there and shows the `mv` that moves it.
    May go once no run from before then needs resuming from the old place.
    """
    return Path(default_out_dir) / checkpoint_name
