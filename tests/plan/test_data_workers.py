"""--data-workers: tokenizing with several processes gives the same documents as with one."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from lmp_testing import one_stage_plan, tiny_run_config

from lmplay.config import DataConfig
from lmplay.errors import UsageError
from lmplay.plan import datasets as plan_datasets
from lmplay.plan.datasets import MIN_ROWS_PER_WORKER, PlanData, tokenize_workers
from lmplay.plan.registry import load_plan


def test_default_is_the_cores_this_process_may_use() -> None:
    assert DataConfig().workers() == len(os.sched_getaffinity(0))
    assert DataConfig(data_workers=3).workers() == 3


def test_zero_workers_is_refused(tmp_path: Path) -> None:
    with pytest.raises(UsageError, match="--data-workers 0"):
        tiny_run_config(tmp_path, data=DataConfig(data_workers=0))


def test_small_datasets_stay_in_one_process() -> None:
    assert tokenize_workers(MIN_ROWS_PER_WORKER - 1, 8) is None
    assert tokenize_workers(3 * MIN_ROWS_PER_WORKER, 8) == 3
    assert tokenize_workers(100 * MIN_ROWS_PER_WORKER, 2) == 2
    assert tokenize_workers(100 * MIN_ROWS_PER_WORKER, 1) is None


def test_two_workers_give_the_documents_of_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    plan = load_plan(str(one_stage_plan(tmp_path, documents=40)))
    serial = PlanData(plan, num_proc=1).split("corpus")
    used = []
    tokenize = plan_datasets.tokenize_documents

    def spy(rows, **options):
        used.append(options["num_proc"])
        return tokenize(rows, **options)

    monkeypatch.setattr(plan_datasets, "MIN_ROWS_PER_WORKER", 10)
    monkeypatch.setattr(plan_datasets, "tokenize_documents", spy)
    parallel = PlanData(plan, num_proc=2).split("corpus")
    assert used == [2]
    assert parallel.train.to_dict() == serial.train.to_dict()
    assert parallel.validation.to_dict() == serial.validation.to_dict()
    assert parallel.train._fingerprint == serial.train._fingerprint
