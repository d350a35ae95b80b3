"""What a run trains on, stored in its checkpoint, so that a resume notices what changed.

Two things are compared on resume (same `--model`, history kept):

- the settings of `MUST_MATCH`: flags that change what the rest of the run trains on or how,
  so that resuming with another value silently makes a different run than the one interrupted;
- each dataset's files: their sizes and SHA-256 of their bytes (read in full, streamed; nothing
  is cached, so an edit that keeps the size and time stamp is still noticed). Hub datasets are
  known by id, config and split, which the plan check already compares.

Every other flag (`--lr`, intervals, `--max-steps`, `--device`, `--mini-batch-size`, ...) may
change freely between runs. `--allow-changed NAME[,NAME]` accepts a listed change; from then
on the checkpoint stores the new value. A stage in progress whose data changed starts over
(a position in the old documents means nothing in the new ones); completed stages stay done.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from lmplay.config import RESUME_SETTINGS
from lmplay.errors import UsageError

MUST_MATCH: dict[str, tuple[str, str]] = {
    "seed": ("data", "seed"),
    "dropout": ("model", "dropout"),
    "batch-size": ("batch", "batch_size"),
    "no-packing": ("batch", "no_packing"),
}
"""Settings a resume must repeat: the flag (without `--`) -> its place in RunConfig.to_dict()."""
DATA = "data"
assert set(RESUME_SETTINGS) == {*MUST_MATCH, DATA}, "config.RESUME_SETTINGS names what is compared"
_CHUNK = 1 << 20


def dataset_fingerprints(datasets: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{dataset name: {"definition": ..., "files": {path: [size, sha256]}}} of a plan's datasets."""
    from lmplay.data.source_spec import source_fingerprint
    from lmplay.plan.saving import saved_copy_source

    return {
        name: {
            "definition": source_fingerprint(dataset.source),
            # What training reads: the --save-datasets copy where there is one.
            "files": _files(saved_copy_source(dataset.source) or dataset.source),
        }
        for name, dataset in datasets.items()
    }


def _files(spec: Any) -> dict[str, list[Any]]:
    from lmplay.data.sources import source_files

    return {_file_key(spec, path): _file_fingerprint(path) for path in source_files(spec)}


def _file_key(spec: Any, path: Path) -> str:
    """The file's name relative to the plan, so that moving a project changes nothing."""
    if spec.bundled:
        return f"bundled/{path.name}"
    base = Path(spec.base_dir).resolve()
    resolved = path.resolve()
    return str(resolved.relative_to(base)) if resolved.is_relative_to(base) else str(resolved)


def _file_fingerprint(path: Path) -> list[Any]:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return [path.stat().st_size, digest.hexdigest()]


def check_resume(
    stored_config: dict[str, Any],
    config: dict[str, Any],
    stored_data: dict[str, Any] | None,
    data: dict[str, Any],
    allowed: set[str],
    source: Path,
) -> tuple[list[str], set[str]]:
    """UsageError naming the first setting or dataset that differs and is not allowed to.

    Returns notes for the changes that `allowed` accepted, and the datasets that changed.
    """
    notes = []
    for name, (section, key) in MUST_MATCH.items():
        stored_section = stored_config.get(section)
        old = stored_section.get(key) if isinstance(stored_section, dict) else None
        new = config[section][key]
        if old is None or old == new:
            continue  # a checkpoint from before this setting was stored: nothing to compare
        if name not in allowed:
            raise UsageError(
                f"{_show(name, new)} differs from the checkpoint {source} ({_show(name, old)}); "
                f"pass {_show(name, old)} to resume it, --allow-changed {name} to train on "
                "with the new value, or a different --model"
            )
        notes.append(f"{name} changed (--allow-changed): {old} -> {new}")
    changed = _data_changes(stored_data or {}, data)
    for name, change in changed:
        if DATA not in allowed:
            raise UsageError(
                f"dataset '{name}' changed since the checkpoint {source} was saved ({change}); "
                "pass --allow-changed data to train on the new contents, or a different --model"
            )
        notes.append(f"dataset '{name}' changed (--allow-changed data): {change}")
    return notes, {name for name, _ in changed}


def _show(name: str, value: Any) -> str:
    if isinstance(value, bool):
        return f"--{name}" if value else f"no --{name}"
    return f"--{name} {value}"


def _data_changes(stored: dict[str, Any], current: dict[str, Any]) -> list[tuple[str, str]]:
    """(dataset, what changed) for datasets kept under the same definition.

    A dataset whose definition changed went through the plan check (`--override-plan`).
    """
    changes = []
    for name, now in current.items():
        before = stored.get(name)
        if not isinstance(before, dict) or before.get("definition") != now["definition"]:
            continue
        old_files, new_files = before.get("files", {}), now["files"]
        added = sorted(set(new_files) - set(old_files))
        removed = sorted(set(old_files) - set(new_files))
        edited = [
            p for p in sorted(set(old_files) & set(new_files)) if old_files[p] != new_files[p]
        ]
        if added:
            changes.append((name, f"new file {added[0]}"))
        elif removed:
            changes.append((name, f"file {removed[0]} is gone"))
        elif edited:
            path = edited[0]
            old_size, new_size = old_files[path][0], new_files[path][0]
            sizes = f"{old_size:,} -> {new_size:,} bytes" if old_size != new_size else "same size"
            changes.append((name, f"{path} has other contents, {sizes}"))
    return changes
