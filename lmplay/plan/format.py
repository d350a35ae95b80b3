"""The training-plan file format: parsing and validation into frozen dataclasses.

A plan is a JSON object:

    {
      "name": "tiny",                      # optional; defaults to the file name
      "seed": 0,                           # data-order seed (added to --seed)
      "validation_fraction": 0.02,         # default held-out share of every dataset
      "datasets": {                        # plan-local names -> where the rows come from
        "shakespeare": {"bundled": "shakespeare", "title_column": "title"},
        "wiki": {"hub": "wikimedia/wikipedia", "config": "20231101.en",
                 "title_column": "title", "validation_fraction": 0.001},
        "notes": {"files": ["data/notes/*.txt"]},
        "qa": {"files": ["qa.jsonl"], "prompt_column": "question", "truth_column": "answer"}
      },
      "stages": [                          # other spellings: lmplay.compat
        {"name": "warmup", "datasets": ["shakespeare"], "epochs": 0.5},
        {"datasets": ["wiki", "notes"], "epochs": 2,
         "stop_at_loss": 3.5, "min_epochs": 1}   # stop rules: see lmplay.plan.stop_keys
      ],
      "eval_only": ["qa"],                 # scored at every validation point, never trained on
      "generate_prompts": ["The king"]     # continued every --generate-every samples
    }

Other spellings (the old `"steps"`, the original lmplay's `"stage": {"dataset": ...}`) are
rewritten into this form first (`lmplay.compat`).

Curriculum keys of a stage (`mix` and `repeat`, the `tokens` and `steps` budgets, `lr` and
the rest of its optimization, `context_len`, `batch_size`, `mini_batch_size`) are described in
`lmplay.plan.stage_keys` and `docs/plans.md`; a stage that sets none keeps its old fingerprint.

Stage stop-rule keys (`stop_at_loss`, `stop_loss_window`, `min_steps`, `min_epochs`,
`early_stop_set`, `patience`) override the matching flags for their stage; counts are per stage
(`lmplay.plan.stop_keys` documents each). `eval_only` datasets are held out exactly as a trained
dataset is (`validation_fraction` of the rows by the plan's seeded permutation, or
`validation_split`), so a corpus scores the same rows whether a plan trains on it or not; no
stage may name one. `generate_prompts` (default: the `--generate-prompts` flag) are the texts
that `--generate-every` continues.

Every error names the plan, the field and what is allowed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from lmplay.compat import canonical_plan
from lmplay.data.source_spec import SourceSpec
from lmplay.errors import UsageError
from lmplay.plan.stage_keys import CURRICULUM_KEYS, parse_curriculum_keys, parse_mix
from lmplay.plan.stop_keys import STOP_KEYS, parse_eval_only, parse_prompts, parse_stop_keys
from lmplay.strict_json import reject_unknown

PLAN_KEYS = {
    "name",
    "description",
    "seed",
    "validation_fraction",
    "datasets",
    "stages",
    "eval_only",
    "generate_prompts",
}
STAGE_KEYS = {"name", "datasets", "epochs", *STOP_KEYS, *CURRICULUM_KEYS}
SOURCE_KEYS = {f.name for f in fields(SourceSpec)} - {"name", "base_dir"}
DATASET_KEYS = SOURCE_KEYS | {"validation_fraction", "validation_split"}


@dataclass(frozen=True)
class DatasetDef:
    """One named dataset of a plan and how its validation rows are held out."""

    source: SourceSpec
    validation_fraction: float
    validation_split: str | None = None

    @property
    def name(self) -> str:
        return self.source.name


@dataclass(frozen=True)
class StageDef:
    name: str
    datasets: tuple[str, ...]
    epochs: float  # math.inf: no epoch limit (a tokens or steps budget ends the stage)
    stop: tuple[tuple[str, Any], ...] = ()  # the stage's own stop-rule keys, sorted
    mix: tuple[tuple[str, float], ...] = ()  # (dataset, weight) in `datasets` order; () unmixed
    keys: tuple[tuple[str, Any], ...] = ()  # budget, optimization and shape keys (stage_keys)

    def get(self, key: str, default: Any = None) -> Any:
        """The value of a curriculum key (`lmplay.plan.stage_keys`) the stage sets, or `default`."""
        return dict(self.keys).get(key, default)

    @property
    def repeat(self) -> bool:
        return bool(self.get("repeat", True))

    def fingerprint(self, plan: TrainingPlan) -> str:
        """Hash of everything that defines what this stage trains on."""
        definition = {
            "name": self.name,
            "epochs": self.epochs,
            "datasets": [_dataset_definition(plan.datasets[d]) for d in self.datasets],
            "seed": plan.seed,
        }
        if self.stop:  # only when set: stages without stop keys keep their old fingerprints
            definition["stop"] = dict(self.stop)
        if self.mix:
            definition["mix"] = [list(pair) for pair in self.mix]
        if self.keys:
            definition["keys"] = {k: list(v) if isinstance(v, tuple) else v for k, v in self.keys}
        return hashlib.sha256(json.dumps(definition, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TrainingPlan:
    name: str
    seed: int
    datasets: dict[str, DatasetDef]
    stages: tuple[StageDef, ...]
    raw: dict[str, Any]
    base_dir: str = "."
    eval_only: tuple[str, ...] = ()  # datasets scored at every validation, never trained on
    generate_prompts: tuple[str, ...] = ()

    def validation_set_names(self) -> list[str]:
        return [dataset.name for dataset in self.validation_sets()]

    def stage_fingerprints(self) -> list[str]:
        return [stage.fingerprint(self) for stage in self.stages]

    def validation_sets(self) -> list[DatasetDef]:
        """Datasets that hold out validation rows, in first-use order."""
        seen: dict[str, DatasetDef] = {}
        for stage in self.stages:
            for name in stage.datasets:
                dataset = self.datasets[name]
                if dataset.validation_fraction > 0 or dataset.validation_split:
                    seen.setdefault(name, dataset)
        for name in self.eval_only:
            seen.setdefault(name, self.datasets[name])
        return list(seen.values())


def parse_plan(obj: Any, *, origin: str, base_dir: str = ".") -> TrainingPlan:
    """Validate a decoded plan JSON object; `origin` names it in error messages."""
    where = f"plan {origin}"
    if not isinstance(obj, dict):
        raise UsageError(f"{where}: must be a JSON object with 'datasets' and 'stages'")
    obj = canonical_plan(obj, where)
    reject_unknown(obj, PLAN_KEYS, where)
    name = obj.get("name", Path(origin).stem)
    if not isinstance(name, str) or not name:
        raise UsageError(f"{where}: 'name' must be a non-empty string")
    seed = obj.get("seed", 0)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise UsageError(f"{where}: 'seed' must be an integer, got {seed!r}")
    default_fraction = _fraction(
        obj.get("validation_fraction", 0.02), f"{where}: 'validation_fraction'"
    )
    raw_datasets = obj.get("datasets")
    if not isinstance(raw_datasets, dict) or not raw_datasets:
        raise UsageError(f"{where}: 'datasets' must be a non-empty object of named datasets")
    datasets = {
        key: _parse_dataset(key, value, default_fraction, f"{where}: datasets.{key}", base_dir)
        for key, value in raw_datasets.items()
    }
    raw_stages = obj.get("stages")
    if not isinstance(raw_stages, list) or not raw_stages:
        raise UsageError(f"{where}: 'stages' must be a non-empty list")
    stages = _unique_default_names(
        [
            _parse_stage(i, raw, datasets, f"{where}: stages[{i}]")
            for i, raw in enumerate(raw_stages)
        ],
        [isinstance(raw, dict) and "name" in raw for raw in raw_stages],
    )
    names = [stage.name for stage in stages]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise UsageError(f"{where}: stage names must be unique; repeated: {', '.join(duplicates)}")
    trained = {name for stage in stages for name in stage.datasets}
    eval_only = parse_eval_only(obj.get("eval_only"), datasets, trained, where)
    prompts = parse_prompts(obj.get("generate_prompts"), where)
    plan = TrainingPlan(name, seed, datasets, stages, obj, base_dir, eval_only, prompts)
    _check_early_stop_sets(plan, where)
    return plan


def _check_early_stop_sets(plan: TrainingPlan, where: str) -> None:
    names = plan.validation_set_names()
    for i, stage in enumerate(plan.stages):
        wanted = dict(stage.stop).get("early_stop_set")
        if wanted is not None and wanted not in names:
            raise UsageError(
                f"{where}: stages[{i}].early_stop_set: '{wanted}' is not a validation set of the "
                f"plan; its validation sets: {', '.join(names) or 'none'}"
            )


def _parse_dataset(
    key: str, value: Any, default_fraction: float, where: str, base_dir: str
) -> DatasetDef:
    if not isinstance(value, dict):
        raise UsageError(f'{where}: must be an object such as {{"files": ["data.jsonl"]}}')
    reject_unknown(value, DATASET_KEYS, where)
    source_args = {k: v for k, v in value.items() if k in SOURCE_KEYS}
    if "files" in source_args:
        files = source_args["files"]
        if isinstance(files, str):
            files = [files]
        if not isinstance(files, list) or not all(isinstance(f, str) for f in files):
            raise UsageError(f"{where}.files: must be a list of paths")
        source_args["files"] = tuple(files)
    for column in (
        "text_column",
        "title_column",
        "prompt_column",
        "truth_column",
        "hub",
        "config",
        "split",
        "format",
        "bundled",
    ):
        if column in source_args and not isinstance(source_args[column], str):
            raise UsageError(f"{where}.{column}: must be a string, got {source_args[column]!r}")
    origins = [k for k in ("hub", "files", "bundled") if k in source_args]
    if len(origins) != 1:
        raise UsageError(
            f"{where}: give exactly one of 'hub', 'files' or 'bundled'"
            f" (got {', '.join(origins) or 'none'})"
        )
    if ("prompt_column" in source_args) != ("truth_column" in source_args):
        raise UsageError(f"{where}: 'prompt_column' and 'truth_column' go together")
    source = SourceSpec(name=key, base_dir=base_dir, **source_args)
    fraction = _fraction(
        value.get("validation_fraction", default_fraction), f"{where}.validation_fraction"
    )
    split = value.get("validation_split")
    if split is not None and not isinstance(split, str):
        raise UsageError(f"{where}.validation_split: must be a split name such as 'validation'")
    if split is not None:
        fraction = 0.0
    return DatasetDef(source, fraction, split)


def _parse_stage(index: int, raw: Any, datasets: dict[str, DatasetDef], where: str) -> StageDef:
    if not isinstance(raw, dict):
        raise UsageError(f"{where}: must be an object with 'datasets' and 'epochs'")
    reject_unknown(raw, STAGE_KEYS, where)
    label = raw.get("name") or "+".join(map(str, raw.get("datasets") or raw.get("mix") or []))
    mix = parse_mix(raw, datasets, f"{where} '{label}'")
    names = _stage_datasets(raw.get("datasets", list(mix) or None), mix, datasets, where)
    name = raw.get("name", "+".join(names))
    if not isinstance(name, str) or not name or "/" in name:
        raise UsageError(f"{where}.name: must be a non-empty string without '/'")
    keys = parse_curriculum_keys(raw, f"{where} '{name}'")
    if "repeat" in dict(keys) and not mix:
        raise UsageError(f"{where} '{name}'.repeat: applies to a stage with 'mix' only")
    budget = "tokens" in raw or "steps" in raw or (mix and not dict(keys).get("repeat", True))
    epochs = raw.get("epochs", math.inf if budget else 1)
    if (
        not isinstance(epochs, (int, float))
        or isinstance(epochs, bool)
        or math.isnan(epochs)
        or epochs <= 0
        or (math.isinf(epochs) and not budget)
    ):
        raise UsageError(f"{where}.epochs: must be a number > 0 (0.25 = a quarter), got {epochs!r}")
    mixed = tuple((n, mix[n]) for n in names) if mix else ()
    return StageDef(name, tuple(names), float(epochs), parse_stop_keys(raw, where), mixed, keys)


def _stage_datasets(
    names: Any, mix: dict[str, float], datasets: dict[str, DatasetDef], where: str
) -> list[str]:
    """The stage's dataset names; with `mix` as well, they must name the same datasets."""
    if isinstance(names, str):
        names = [names]
    if not isinstance(names, list) or not names or not all(isinstance(n, str) for n in names):
        raise UsageError(f"{where}.datasets: must be a non-empty list of dataset names")
    for name in names:
        if name not in datasets:
            raise UsageError(
                f"{where}.datasets: unknown dataset '{name}'; defined: {', '.join(datasets)}"
            )
    if mix and set(names) != set(mix):
        raise UsageError(
            f"{where}.mix: must weigh exactly the stage's datasets ({', '.join(names)}); "
            f"got {', '.join(mix)}"
        )
    return names


def _unique_default_names(stages: list[StageDef], named: list[bool]) -> tuple[StageDef, ...]:
    """Unnamed stages are called after their datasets; a repeat gets its stage number."""
    names = [stage.name for stage in stages]
    return tuple(
        stage
        if was_named or names.count(stage.name) == 1
        else dataclasses.replace(stage, name=f"{stage.name}-{i + 1}")
        for i, (stage, was_named) in enumerate(zip(stages, named))
    )


def _fraction(value: Any, where: str) -> float:
    if not isinstance(value, (int, float)) or isinstance(value, bool) or not 0 <= value < 1:
        raise UsageError(f"{where}: must be a number in [0, 1), got {value!r}")
    return float(value)


def _dataset_definition(dataset: DatasetDef) -> dict[str, Any]:
    source = {f.name: getattr(dataset.source, f.name) for f in fields(SourceSpec)}
    source.pop("base_dir")
    source["files"] = list(source["files"])
    return {
        "source": source,
        "validation_fraction": dataset.validation_fraction,
        "validation_split": dataset.validation_split,
    }
