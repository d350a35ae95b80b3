"""`--save-datasets`: local copies of a plan's datasets, which later runs read instead.

Each source a plan reads (a dataset, and its validation split when it names one) is saved as a
`save_to_disk` folder of its prompt/truth rows, `$LMP_DATASETS/<dataset>-<split>-<key>` (default
folder `out_gpt/datasets`). The key is the dataset's `source_fingerprint`, combined with the
plan's folder when the dataset lists relative files, so a changed definition (another hub
config, column or file) finds no copy and is loaded from its source again instead of being
served stale rows. A copy is written under a temporary name and renamed into place when
complete. Bundled corpora ship with lmplay and are not copied.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from lmplay.config import DEFAULT_OUT_DIR
from lmplay.data.source_spec import SourceSpec, source_fingerprint
from lmplay.data.sources import load_source
from lmplay.plan.format import DatasetDef, TrainingPlan


def datasets_folder() -> Path:
    return Path(os.environ.get("LMP_DATASETS") or Path(DEFAULT_OUT_DIR) / "datasets")


def validation_source(dataset: DatasetDef) -> SourceSpec:
    """The source of a dataset's held-out rows when it names a `validation_split`."""
    assert dataset.validation_split is not None
    return dataclasses.replace(dataset.source, split=dataset.validation_split)


def plan_sources(plan: TrainingPlan) -> Iterator[SourceSpec]:
    """Every source a run of `plan` reads, bundled corpora excepted."""
    for dataset in plan.datasets.values():
        if dataset.source.bundled:
            continue
        yield dataset.source
        if dataset.validation_split:
            yield validation_source(dataset)


def saved_copy_path(spec: SourceSpec, folder: Path | None = None) -> Path:
    """Where `--save-datasets` puts (and later runs look for) the copy of `spec`."""
    key = source_fingerprint(spec)
    if any(not Path(pattern).expanduser().is_absolute() for pattern in spec.files):
        where = str(Path(spec.base_dir).resolve())
        key = hashlib.sha256(f"{key}\n{where}".encode()).hexdigest()[:16]
    name, split = (re.sub(r"[^\w.-]", "_", part) for part in (spec.name, spec.split))
    return (folder or datasets_folder()) / f"{name}-{split}-{key}"  # "train[:10%]": "train__10__"


def saved_copy_source(spec: SourceSpec) -> SourceSpec | None:
    """A source reading the saved copy of `spec`, or None when there is none."""
    if spec.bundled:
        return None
    path = saved_copy_path(spec)
    if not path.is_dir():
        return None
    return SourceSpec(
        name=spec.name,
        files=(str(path.resolve()),),
        format="disk",
        prompt_column="prompt",
        truth_column="truth",
        train_prompt=spec.train_prompt,
    )


def save_plan_datasets(plan: TrainingPlan) -> list[Path]:
    """Save a copy of every source of `plan` that has none yet; returns the copies' folders."""
    folder = datasets_folder()
    saved = []
    for spec in plan_sources(plan):
        target = saved_copy_path(spec, folder)
        if target.is_dir():
            print(f"dataset '{spec.name}' is already saved in {target}", file=sys.stderr)
        else:
            rows = load_source(spec)  # an unreachable source fails before anything is written
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryDirectory(prefix=".saving-", dir=folder) as staging:
                rows.save_to_disk(str(Path(staging) / "rows"))
                (Path(staging) / "rows").rename(target)
            print(f"saved dataset '{spec.name}' to {target}", file=sys.stderr)
        saved.append(target)
    skipped = [d.name for d in plan.datasets.values() if d.source.bundled]
    if skipped:
        print(f"bundled with lmplay, not copied: {', '.join(skipped)}", file=sys.stderr)
    return saved
