"""Built-in plans by name, and loading a plan from a name or a file path."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

from lmplay.errors import UsageError
from lmplay.plan.format import TrainingPlan, parse_plan


def builtin_folder() -> Path:
    """Where built-in plans live; their relative `files` resolve against it (`data/...`)."""
    return Path(str(resources.files("lmplay.plan").joinpath("builtin")))


def builtin_plan_names() -> list[str]:
    folder = builtin_folder()
    return sorted(
        p.name.removesuffix(".json") for p in folder.iterdir() if p.name.endswith(".json")
    )


def load_plan(name_or_path: str) -> TrainingPlan:
    """A path to a plan file if one exists there, else a built-in plan name."""
    path = Path(name_or_path)
    if path.is_file():
        return _load_file(path, base_dir=str(path.resolve().parent))
    if name_or_path in builtin_plan_names():
        builtin = builtin_folder() / f"{name_or_path}.json"
        text = builtin.read_text(encoding="utf-8")
        return _parse_text(text, name_or_path, base_dir=str(builtin_folder()))
    if path.suffix == ".json" or "/" in name_or_path:
        raise UsageError(f"--training-plan {name_or_path}: no such file")
    raise UsageError(
        f"--training-plan {name_or_path}: not a file and not a built-in plan; built-in plans: "
        f"{', '.join(builtin_plan_names())}"
    )


def plan_from_checkpoint(raw: dict, origin: str) -> TrainingPlan:
    """Rebuild the plan stored in a checkpoint (paths resolved as when it was saved)."""
    return parse_plan(raw["plan"], origin=origin, base_dir=raw["base_dir"])


def _load_file(path: Path, base_dir: str) -> TrainingPlan:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as error:
        raise UsageError(f"--training-plan {path}: cannot read ({error.strerror})") from error
    return _parse_text(text, str(path), base_dir)


def _parse_text(text: str, origin: str, base_dir: str) -> TrainingPlan:
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise UsageError(
            f"plan {origin}: malformed JSON at line {error.lineno} column {error.colno}: "
            f"{error.msg}"
        ) from error
    return parse_plan(obj, origin=origin, base_dir=base_dir)
