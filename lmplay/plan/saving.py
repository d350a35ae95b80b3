"""`--save-datasets`: prepare a plan's datasets as local copies for later offline runs."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from lmplay.config import DEFAULT_OUT_DIR
from lmplay.data.sources import save_source
from lmplay.plan.format import TrainingPlan


def datasets_folder() -> Path:
    return Path(os.environ.get("LMP_DATASETS", Path(DEFAULT_OUT_DIR) / "datasets"))


def save_plan_datasets(plan: TrainingPlan) -> list[Path]:
    folder = datasets_folder()
    saved = []
    for dataset in plan.datasets.values():
        path = save_source(dataset.source, folder)
        print(f"saved dataset '{dataset.name}' to {path}", file=sys.stderr)
        saved.append(path)
    return saved
