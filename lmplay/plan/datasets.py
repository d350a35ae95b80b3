"""Load, tokenize and split a plan's datasets into train and validation documents.

Each dataset is loaded and tokenized once per process; `datasets` caches the tokenized Arrow
files on disk, so a rerun reads them instead of tokenizing again. Validation rows are held out
by a seeded permutation, so they never appear in training whatever the stage; a plan's
`eval_only` datasets are held out the same way (the same rows) and never trained on. A source
with a copy saved by `--save-datasets` (see `lmplay.plan.saving`) is read from that copy.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np

from lmplay.data.batcher import Documents
from lmplay.data.documents import tokenize_documents
from lmplay.data.source_spec import SourceSpec
from lmplay.data.sources import load_source
from lmplay.plan.format import DatasetDef, StageDef, TrainingPlan
from lmplay.plan.saving import saved_copy_source, validation_source

# Below this many rows per process, a process pool costs more than it saves.
MIN_ROWS_PER_WORKER = 2000


@dataclass(frozen=True)
class SplitDataset:
    train: object  # datasets.Dataset of tokenized documents
    validation: object | None


class PlanData:
    """A plan's tokenized datasets; `num_proc` processes tokenize a dataset large enough."""

    def __init__(self, plan: TrainingPlan, num_proc: int = 1) -> None:
        self.plan = plan
        self.num_proc = num_proc
        self._splits: dict[str, SplitDataset] = {}

    def split(self, name: str) -> SplitDataset:
        if name not in self._splits:
            self._splits[name] = self._prepare(self.plan.datasets[name])
        return self._splits[name]

    def stage_documents(self, stage: StageDef) -> Documents:
        return Documents([self.split(name).train for name in stage.datasets], stage.datasets)

    def validation_documents(self) -> dict[str, Documents]:
        found = {}
        for dataset in self.plan.validation_sets():
            validation = self.split(dataset.name).validation
            if validation is not None and len(validation) > 0:
                found[dataset.name] = Documents([validation])
        return found

    def _prepare(self, dataset: DatasetDef) -> SplitDataset:
        train_prompt = dataset.source.train_prompt
        rows = self._tokenize(load_rows(dataset.source), train_prompt)
        if dataset.validation_split:
            held_out = self._tokenize(load_rows(validation_source(dataset)), train_prompt)
            return SplitDataset(rows, held_out)
        count = held_out_count(len(rows), dataset.validation_fraction)
        if count == 0:
            return SplitDataset(rows, None)
        order = np.random.default_rng(self.plan.seed).permutation(len(rows))
        held_out_rows = np.sort(order[:count])
        train_rows = np.sort(order[count:])
        return SplitDataset(rows.select(train_rows), rows.select(held_out_rows))

    def _tokenize(self, rows: object, train_prompt: bool) -> object:
        workers = tokenize_workers(len(rows), self.num_proc)
        return tokenize_documents(rows, train_prompt=train_prompt, num_proc=workers)


def tokenize_workers(rows: int, num_proc: int) -> int | None:
    """Processes for `rows` rows: starting one costs about as much as tokenizing a few thousand
    short rows, so small datasets stay in this process (None). The result is the same either
    way; the Arrow cache is kept per worker count, so a rerun with another count tokenizes again.
    """
    workers = min(num_proc, rows // MIN_ROWS_PER_WORKER)
    return workers if workers > 1 else None


def load_rows(spec: SourceSpec) -> object:
    """Prompt/truth rows of `spec`, from its saved copy when there is one."""
    saved = saved_copy_source(spec)
    if saved is None:
        return load_source(spec)
    print(f"dataset '{spec.name}': reading the saved copy {saved.files[0]}", file=sys.stderr)
    return load_source(saved)


def held_out_count(rows: int, fraction: float) -> int:
    """At least one validation row when asked for any, and never every row."""
    if fraction <= 0 or rows < 2:
        return 0
    return min(rows - 1, max(1, round(rows * fraction)))
